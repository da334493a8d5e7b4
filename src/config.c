/* config: conf/switchyard.json parsed once into an immutable, refcounted sy_config.
 *
 * The one design decision: every JSON object of the file has one descriptor table (the
 * `field` arrays below) and a single generic walker uses it for parsing, type checks,
 * defaults, bounds and the generated documentation (sy_config_doc, copied into conf/README.md).
 * A default or a bound therefore lives in exactly one place. The walker never stops at the
 * first problem: each one becomes a line "<json path>: <message>" in the caller's errlist.
 *
 * All memory of a config comes from jansson's allocator (json_get_alloc_funcs), so the unit
 * test's failing allocator (json_set_alloc_funcs) reaches config.c's own allocations as well
 * as jansson's. Error messages never echo a string value that could be a secret. */
#include "switchyard/config.h"

#include "switchyard/health.h"
#include "switchyard/json_util.h"
#include "switchyard/prices.h"
#include "switchyard/routes.h"
#include "switchyard/store.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX_BYTES (16u << 20) /* a config file larger than this is a mistake */
#define PATH_LEN 256                 /* JSON paths in messages; longer ones are truncated */
#define KEY_SHOW 64                  /* bytes of a user-supplied key shown in a message */
#define NAME_MAX_LEN 128
#define NO_MAX LLONG_MAX /* FT_INT: no upper bound besides the storage type's */

/* ---- allocation through jansson's allocator ---------------------------------------------- */

static void *xmalloc(size_t n)
{
    json_malloc_t m;
    json_free_t f;

    json_get_alloc_funcs(&m, &f);
    return m(n);
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

static void *xcalloc(size_t n, size_t size)
{
    void *p;

    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    p = xmalloc(n * size == 0 ? 1 : n * size);
    if (p != NULL)
        memset(p, 0, n * size == 0 ? 1 : n * size);
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

/* Secrets read from the environment are wiped before their memory is returned. */
static void wipe_free(char *s)
{
    if (s != NULL)
        explicit_bzero(s, strlen(s));
    xfree(s);
}

/* ---- descriptor tables ------------------------------------------------------------------- */

typedef enum ftype {
    FT_STR,         /* char *, new copy; optional <choices>, <check> */
    FT_BOOL,        /* bool */
    FT_INT,         /* integer stored as <itype>, bounds <min>..<max> */
    FT_NUM,         /* double, bounds <nmin>..<nmax> */
    FT_ENUM,        /* a string of <choices>, stored as its index in an int-sized enum */
    FT_OBJECT,      /* nested object described by <sub>; its offsets are relative to base+off */
    FT_LISTEN,      /* "HOST:PORT" into listen_host / listen_port */
    FT_RAW,         /* null or object, kept as a deep copy */
    FT_DEPLOYMENTS, /* the deployments array (elements described by <sub>) */
    FT_ALIASES,     /* the aliases object */
} ftype;

typedef enum fint { FI_INT, FI_LONG, FI_UINT, FI_SIZE } fint;

enum {
    FL_REQUIRED = 1u << 0,
    FL_OPTIONAL = 1u << 1,    /* FT_OBJECT: absent leaves it zeroed, present sets <set_off> */
    FL_ANTHROPIC = 1u << 2,   /* allowed, and defaulted, only with provider "anthropic" */
    FL_STRIP_SLASH = 1u << 3, /* FT_STR: trailing '/' removed */
};

/* Validates a string value: NULL when fine, else the message (which never echoes the value). */
typedef const char *(*str_check_fn)(const char *s);

typedef struct table table;

typedef struct field {
    const char *key;
    ftype type;
    fint itype;
    unsigned flags;
    bool def_bool;
    size_t off;          /* into the struct the table describes */
    const char *def_str; /* FT_STR, FT_ENUM, FT_LISTEN */
    long long def_int;
    double def_num;
    long long min, max; /* FT_INT */
    double nmin, nmax;  /* FT_NUM */
    const char *const *choices;
    str_check_fn check;
    const char *bounds_doc; /* what <check> enforces, for the docs */
    const table *inherit;   /* FT_INT: default and bounds are those of the same key there */
    const char *sibling;    /* FT_NUM: default is the value of this earlier key of the table */
    const table *sub;       /* FT_OBJECT, FT_DEPLOYMENTS */
    size_t set_off;         /* FL_OPTIONAL: bool set true, relative to the sub struct */
    const char *doc;
} field;

struct table {
    const char *path;     /* path prefix in the docs: "", "server", "deployments[]", ... */
    const char *title;    /* docs heading */
    const char *intro;    /* docs paragraph */
    const char *env_hint; /* what to use instead of a literal secret, e.g. "api_key_env" */
    const field *fields;
    size_t n;
};

static const char *check_name(const char *s);
static const char *check_url(const char *s);
static const char *check_model(const char *s);
static const char *check_env(const char *s);
static const char *check_path(const char *s);

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const providers[] = {"openai", "anthropic", NULL};

#define NAME_DOC "`[A-Za-z0-9._:/-]+`, at most 128 characters"
#define ENV_DOC "an environment variable name, `[A-Za-z_][A-Za-z0-9_]*`"
#define PATH_DOC "a path without control characters, at most 4096 bytes"

/* The tables keep several attributes per line; clang-format would put each on its own. */
/* clang-format off */
static const field auth_fields[] = {
    {.key = "master_key_env", .type = FT_STR, .off = offsetof(sy_config, master_key_env),
     .def_str = "SWITCHYARD_MASTER_KEY", .check = check_env, .bounds_doc = ENV_DOC,
     .doc = "environment variable holding the master key for `/admin` endpoints; unset "
            "disables them"},
    {.key = "require_keys", .type = FT_BOOL, .off = offsetof(sy_config, require_keys),
     .def_bool = false,
     .doc = "when true every API request needs a virtual key (`sk-sy-...`); when false "
            "requests without a key are served"},
};

static const field server_fields[] = {
    {.key = "max_body_bytes", .type = FT_INT, .itype = FI_SIZE,
     .off = offsetof(sy_config, max_body_bytes), .def_int = 8388608, .min = 1,
     .max = 1073741824, .doc = "largest request body accepted (413 beyond)"},
    {.key = "max_json_depth", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_config, max_json_depth), .def_int = 64, .min = 1, .max = 2048,
     .doc = "deepest nesting of arrays/objects accepted in a request body"},
    {.key = "max_messages", .type = FT_INT, .itype = FI_SIZE,
     .off = offsetof(sy_config, max_messages), .def_int = 2048, .min = 1, .max = 1000000,
     .doc = "most `messages` accepted in one chat request"},
    {.key = "conn_limit", .type = FT_INT, .itype = FI_UINT,
     .off = offsetof(sy_config, conn_limit), .def_int = 16384, .min = 1, .max = 1000000,
     .doc = "concurrent client connections (the process also needs that many descriptors)"},
    {.key = "conn_timeout_s", .type = FT_INT, .itype = FI_UINT,
     .off = offsetof(sy_config, conn_timeout_s), .def_int = 60, .min = 1, .max = 86400,
     .doc = "idle client connection timeout in seconds (slowloris protection)"},
    {.key = "threads", .type = FT_INT, .itype = FI_UINT, .off = offsetof(sy_config, threads),
     .def_int = 1, .min = 1, .max = 256, .doc = "HTTP polling threads"},
    {.key = "shutdown_grace_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, shutdown_grace_ms), .def_int = 10000, .min = 0,
     .max = 3600000, .doc = "on SIGTERM, how long in-flight requests may still finish"},
    {.key = "log_level", .type = FT_STR, .off = offsetof(sy_config, log_level),
     .def_str = "info", .choices = log_levels, .doc = "least severe level logged"},
    {.key = "access_log", .type = FT_BOOL, .off = offsetof(sy_config, access_log),
     .def_bool = true, .doc = "one line per request: status, tokens, cost, latency, TTFT"},
};

static const field upstream_fields[] = {
    {.key = "connect_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, connect_timeout_ms), .def_int = 5000, .min = 1, .max = 600000,
     .doc = "TCP + TLS connect deadline for an upstream attempt"},
    {.key = "first_byte_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, first_byte_timeout_ms), .def_int = 60000, .min = 1,
     .max = 86400000, .doc = "deadline from sending the request to the first response byte"},
    {.key = "idle_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, idle_timeout_ms), .def_int = 60000, .min = 1,
     .max = 86400000, .doc = "longest silence between two chunks of a response"},
    {.key = "total_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, total_timeout_ms), .def_int = 600000, .min = 1,
     .max = 86400000, .doc = "deadline for a whole upstream attempt, streams included"},
    {.key = "max_attempts", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_config, max_attempts), .def_int = 3, .min = 1, .max = 10,
     .doc = "attempts per request over an alias's targets (first try included)"},
    {.key = "retry_base_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, retry_base_ms), .def_int = 100, .min = 0, .max = 600000,
     .doc = "first retry backoff; doubles per attempt, with jitter"},
    {.key = "retry_max_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, retry_max_ms), .def_int = 5000, .min = 0, .max = 3600000,
     .doc = "cap on one backoff (and on an honoured `Retry-After`); must be >= "
            "`retry_base_ms`"},
    {.key = "breaker_failures", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_config, breaker_failures), .def_int = 5, .min = 1, .max = 1000,
     .doc = "consecutive failed attempts (connect, timeout, 429, 5xx) that open a "
            "deployment's circuit breaker"},
    {.key = "breaker_cooldown_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, breaker_cooldown_ms), .def_int = 10000, .min = 1,
     .max = 3600000, .doc = "how long an open breaker skips the deployment before one probe"},
    {.key = "breaker_sync_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, breaker_sync_ms), .def_int = 250, .min = 10, .max = 60000,
     .doc = "with Redis: how often this instance reads the circuit breakers other instances "
            "opened or closed (a local change is published at once); read at start"},
    {.key = "max_response_bytes", .type = FT_INT, .itype = FI_SIZE,
     .off = offsetof(sy_config, max_response_bytes), .def_int = 67108864, .min = 1024,
     .max = 1073741824, .doc = "cap on a buffered (non-stream) upstream response body"},
};

static const field batch_fields[] = {
    {.key = "file_max_bytes", .type = FT_INT, .itype = FI_SIZE,
     .off = offsetof(sy_config, file_max_bytes), .def_int = 209715200, .min = 1,
     .max = 1099511627776LL, .doc = "largest file accepted by `POST /v1/files` (413 beyond)"},
    {.key = "max_lines", .type = FT_INT, .itype = FI_SIZE,
     .off = offsetof(sy_config, batch_max_lines), .def_int = 50000, .min = 1, .max = 100000000,
     .doc = "most request lines in one batch input file"},
    {.key = "workers", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_config, batch_workers), .def_int = 4, .min = 0, .max = 4096,
     .doc = "batch lines this instance runs at once; 0 = this instance accepts batches but "
            "runs none of their lines"},
    {.key = "share", .type = FT_NUM, .off = offsetof(sy_config, batch_share), .def_num = 0.5,
     .nmin = 0.0, .nmax = 1.0,
     .doc = "share of each deployment's `max_inflight` that batch lines may take; the rest is "
            "kept for interactive requests"},
    {.key = "lease_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, batch_lease_ms), .def_int = 120000, .min = 100,
     .max = 86400000,
     .doc = "a line taken by a worker and not finished this long is reclaimed by another "
            "(a dead instance's lines); keep it above the longest line"},
    {.key = "max_attempts", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_config, batch_max_attempts), .def_int = 5, .min = 1, .max = 100,
     .doc = "attempts per line on transient failures (429, 5xx, timeouts)"},
    {.key = "retry_base_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, batch_retry_base_ms), .def_int = 1000, .min = 0,
     .max = 3600000, .doc = "first retry backoff of a batch line; doubles per attempt"},
    {.key = "poll_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, batch_poll_ms), .def_int = 1000, .min = 10, .max = 600000,
     .doc = "period of the sweep that reclaims, expires and finalizes batches"},
    {.key = "window_s", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, batch_window_s), .def_int = 86400, .min = 1,
     .max = 604800,
     .doc = "seconds a `completion_window` of `24h` lasts (shorten only for tests)"},
    {.key = "provider_group_size", .type = FT_INT, .itype = FI_SIZE,
     .off = offsetof(sy_config, batch_provider_group_size), .def_int = 1000, .min = 1,
     .max = 50000,
     .doc = "most lines in one batch submitted to a provider's batch API (deployments with "
            "`batch_api`); more wait for the next group. OpenAI takes up to 50,000 lines a "
            "batch, Anthropic up to 100,000"},
    {.key = "provider_grace_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_config, batch_provider_grace_ms), .def_int = 900000, .min = 0,
     .max = 86400000,
     .doc = "how long an expired or cancelled batch waits for its lines at a provider's batch "
            "API (cancelled there, answers of the lines that ran collected) before it ends "
            "without them: they are reported `batch_expired`/`batch_cancelled`, and answers "
            "arriving later are dropped, not billed. Counted from `expires_at` or "
            "`cancelling_at`; OpenAI allows up to 10 minutes for a cancel"},
    {.key = "files_dir", .type = FT_STR, .off = offsetof(sy_config, files_dir),
     .check = check_path, .bounds_doc = PATH_DOC,
     .doc = "directory of uploaded and batch output file contents; unset: `<data_dir>/files`. "
            "Instances on one Redis share file metadata; point them at one shared directory "
            "(each keeps its own `data_dir`) so any of them serves any file's content"},
};

static const table auth_table = {"auth", "`auth`", "Client authentication.", "master_key_env",
                                 auth_fields, sizeof(auth_fields) / sizeof(auth_fields[0])};
static const table server_table = {
    "server", "`server`", "The client-facing HTTP server. Every key is optional.", NULL,
    server_fields, sizeof(server_fields) / sizeof(server_fields[0])};
static const table upstream_table = {
    "upstream", "`upstream`",
    "Defaults for calls to upstream providers. Every key is optional; a deployment's own "
    "timeouts win over these.",
    NULL, upstream_fields, sizeof(upstream_fields) / sizeof(upstream_fields[0])};
static const table batch_table = {
    "batch", "`batch`",
    "The Files and Batches API and the batch queue (DESIGN §9). Every key is optional.", NULL,
    batch_fields, sizeof(batch_fields) / sizeof(batch_fields[0])};

static const field price_fields[] = {
    {.key = "input", .type = FT_NUM, .off = offsetof(sy_price, input), .flags = FL_REQUIRED,
     .nmin = 0, .nmax = HUGE_VAL, .doc = "USD per million prompt tokens"},
    {.key = "cached_input", .type = FT_NUM, .off = offsetof(sy_price, cached_input),
     .sibling = "input", .nmin = 0, .nmax = HUGE_VAL,
     .doc = "USD per million prompt tokens read from the provider's prompt cache"},
    {.key = "cache_write", .type = FT_NUM, .off = offsetof(sy_price, cache_write),
     .sibling = "input", .nmin = 0, .nmax = HUGE_VAL,
     .doc = "USD per million prompt tokens written to the provider's prompt cache (Anthropic)"},
    {.key = "output", .type = FT_NUM, .off = offsetof(sy_price, output), .flags = FL_REQUIRED,
     .nmin = 0, .nmax = HUGE_VAL, .doc = "USD per million completion tokens"},
    {.key = "batch_discount", .type = FT_NUM, .off = offsetof(sy_price, batch_discount),
     .def_num = 0, .nmin = 0, .nmax = 1,
     .doc = "fraction taken off for batch traffic (0.5 = half price)"},
};

static const table price_table = {
    "deployments[].price", "`deployments[].price`",
    "An explicit price, USD per million tokens. A price of 0 is allowed (local models), "
    "silence is not: a deployment without one takes the entry of the prices file (`prices`) "
    "for its `model` (exact name, else the longest family prefix), and `check` fails on a "
    "deployment priced by neither.",
    "api_key_env", price_fields, sizeof(price_fields) / sizeof(price_fields[0])};

static const field deployment_fields[] = {
    {.key = "name", .type = FT_STR, .off = offsetof(sy_deployment, name),
     .flags = FL_REQUIRED, .check = check_name, .bounds_doc = NAME_DOC ", unique",
     .doc = "the name clients put in `model` and aliases and routes refer to"},
    {.key = "provider", .type = FT_ENUM, .off = offsetof(sy_deployment, provider),
     .def_str = "openai", .choices = providers,
     .doc = "wire protocol: `openai` (OpenAI, Ollama, vLLM, llama.cpp, ...) or `anthropic` "
            "(Messages API, translated)"},
    {.key = "base_url", .type = FT_STR, .off = offsetof(sy_deployment, base_url),
     .flags = FL_REQUIRED | FL_STRIP_SLASH, .check = check_url,
     .bounds_doc = "`http://` or `https://` URL; trailing `/` removed",
     .doc = "upstream base URL, e.g. `https://api.openai.com/v1`"},
    {.key = "model", .type = FT_STR, .off = offsetof(sy_deployment, model),
     .flags = FL_REQUIRED, .check = check_model,
     .bounds_doc = "printable, no spaces, at most 256 characters",
     .doc = "the model name sent upstream"},
    {.key = "api_key_env", .type = FT_STR, .off = offsetof(sy_deployment, api_key_env),
     .check = check_env, .bounds_doc = ENV_DOC,
     .doc = "environment variable holding the upstream API key; named but unset or empty: "
            "the deployment is disabled with a warning (the proxy still starts)"},
    {.key = "tier_hint", .type = FT_STR, .off = offsetof(sy_deployment, tier_hint),
     .check = check_name, .bounds_doc = NAME_DOC,
     .doc = "informational tier label, e.g. `local` or `flagship`"},
    {.key = "anthropic_version", .type = FT_STR,
     .off = offsetof(sy_deployment, anthropic_version), .flags = FL_ANTHROPIC,
     .def_str = "2023-06-01", .check = check_name, .bounds_doc = NAME_DOC,
     .doc = "`anthropic-version` header; only with provider `anthropic`"},
    {.key = "max_inflight", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_deployment, max_inflight), .def_int = 0, .min = 0, .max = NO_MAX,
     .doc = "concurrent requests sent to this deployment; 0 = unlimited"},
    {.key = "connect_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_deployment, connect_timeout_ms), .inherit = &upstream_table,
     .doc = "as `upstream.connect_timeout_ms`, for this deployment"},
    {.key = "first_byte_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_deployment, first_byte_timeout_ms), .inherit = &upstream_table,
     .doc = "as `upstream.first_byte_timeout_ms`, for this deployment"},
    {.key = "idle_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_deployment, idle_timeout_ms), .inherit = &upstream_table,
     .doc = "as `upstream.idle_timeout_ms`, for this deployment"},
    {.key = "total_timeout_ms", .type = FT_INT, .itype = FI_LONG,
     .off = offsetof(sy_deployment, total_timeout_ms), .inherit = &upstream_table,
     .doc = "as `upstream.total_timeout_ms`, for this deployment"},
    {.key = "stream_usage", .type = FT_BOOL, .off = offsetof(sy_deployment, stream_usage),
     .def_bool = true,
     .doc = "ask the upstream for usage in streams (`stream_options.include_usage`); turn off "
            "for servers that reject it"},
    {.key = "default_max_tokens", .type = FT_INT, .itype = FI_INT,
     .off = offsetof(sy_deployment, default_max_tokens), .def_int = 4096, .min = 1,
     .max = 1000000,
     .doc = "provider `anthropic`: `max_tokens` sent when the client gives neither "
            "`max_tokens` nor `max_completion_tokens` (the Messages API requires one)"},
    {.key = "auto_cache_control", .type = FT_BOOL,
     .off = offsetof(sy_deployment, auto_cache_control), .def_bool = false,
     .doc = "provider `anthropic`: when a request has no cache breakpoint of its own and its "
            "stable prefix (tools, system, turns before the last) is about 1024 tokens or more, "
            "mark that prefix with `cache_control` so repeated conversations read Anthropic's "
            "prompt cache"},
    {.key = "price", .type = FT_OBJECT, .off = offsetof(sy_deployment, price),
     .flags = FL_OPTIONAL, .sub = &price_table, .set_off = offsetof(sy_price, set),
     .doc = "explicit price, see below"},
    {.key = "batch_api", .type = FT_BOOL, .off = offsetof(sy_deployment, batch_api),
     .def_bool = false,
     .doc = "batch lines routed to this deployment go through the provider's own batch API "
            "(OpenAI Batches, Anthropic Message Batches) at its discount"},
};

static const table deployment_table = {
    "deployments[]", "`deployments[]`",
    "One upstream model endpoint. Clients name a deployment (or an alias) in `model`.",
    "api_key_env", deployment_fields, sizeof(deployment_fields) / sizeof(deployment_fields[0])};

static const field top_fields[] = {
    {.key = "listen", .type = FT_LISTEN, .off = offsetof(sy_config, listen_host),
     .def_str = "127.0.0.1:8080",
     .bounds_doc = "`HOST:PORT` or `[IPv6]:PORT`, port 0..65535 (0 = any free port)",
     .doc = "address the proxy listens on"},
    {.key = "redis", .type = FT_RAW, .off = offsetof(sy_config, redis),
     .doc = "Redis connection settings (validated by the store module); `null` runs on "
            "embedded in-process stores"},
    {.key = "mem_store", .type = FT_RAW, .off = offsetof(sy_config, mem_store),
     .doc = "embedded store settings when `redis` is null (validated by the store module: "
            "`max_bytes`, `max_value_bytes`)"},
    {.key = "data_dir", .type = FT_STR, .off = offsetof(sy_config, data_dir),
     .def_str = "var", .check = check_path, .bounds_doc = PATH_DOC,
     .doc = "directory for the spend journal and other local state"},
    {.key = "prices", .type = FT_STR, .off = offsetof(sy_config, prices_path),
     .def_str = "conf/prices.json", .check = check_path, .bounds_doc = PATH_DOC,
     .doc = "price list file for deployments without an explicit `price`"},
    {.key = "routes", .type = FT_STR, .off = offsetof(sy_config, routes_dir),
     .check = check_path, .bounds_doc = PATH_DOC,
     .doc = "directory of routing rule files (`*.json` with a `routes` array) and classifier "
            "weights; unset: no route tables, every model resolves by alias or deployment name"},
    {.key = "auth", .type = FT_OBJECT, .sub = &auth_table, .doc = "see below"},
    {.key = "server", .type = FT_OBJECT, .sub = &server_table, .doc = "see below"},
    /* upstream comes before deployments: their timeouts default to its values */
    {.key = "upstream", .type = FT_OBJECT, .sub = &upstream_table, .doc = "see below"},
    {.key = "batch", .type = FT_OBJECT, .sub = &batch_table, .doc = "see below"},
    {.key = "deployments", .type = FT_DEPLOYMENTS, .flags = FL_REQUIRED,
     .sub = &deployment_table, .bounds_doc = "at least one",
     .doc = "upstream model endpoints, see below"},
    /* aliases come after deployments: they refer to them */
    {.key = "aliases", .type = FT_ALIASES,
     .bounds_doc = "names " NAME_DOC ", not a deployment's name; each list non-empty, of "
                   "known deployments, without repeats",
     .doc = "`{\"name\": [\"deployment\", ...]}`: a model name standing for an ordered list "
            "of deployments (fallback order)"},
};

static const table top_table = {
    "", "Top level", "The file is one JSON object. Only `deployments` is required. Relative paths "
    "(`data_dir`, `prices`, `routes`) resolve against the process working directory.", NULL,
    top_fields, sizeof(top_fields) / sizeof(top_fields[0])};
/* clang-format on */

/* ---- string checks ----------------------------------------------------------------------- */

static bool has_ctl(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool is_name_char(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("._:/-", ch) != NULL);
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)s[i]))
            return false;
    return true;
}

static const char *check_name(const char *s)
{
    return valid_name(s) ? NULL : "must match [A-Za-z0-9._:/-]+ (at most 128 characters)";
}

static const char *check_url(const char *s)
{
    const char *host = NULL;

    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    if (host == NULL || *host == '\0' || *host == '/' || strlen(s) > 2048 || has_ctl(s) ||
        strchr(s, ' ') != NULL)
        return "must be an http:// or https:// URL";
    return NULL;
}

static const char *check_model(const char *s)
{
    if (strlen(s) > 256 || has_ctl(s) || strchr(s, ' ') != NULL)
        return "must be printable without spaces (at most 256 characters)";
    return NULL;
}

static const char *check_env(const char *s)
{
    size_t n = strlen(s);
    bool ok = n <= NAME_MAX_LEN && !(s[0] >= '0' && s[0] <= '9');

    for (size_t i = 0; ok && i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        ok = ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
             (ch >= '0' && ch <= '9');
    }
    /* the value is not echoed: a key pasted here instead of a variable name is a secret */
    return ok ? NULL
              : "must name an environment variable ([A-Za-z_][A-Za-z0-9_]*), not hold a secret";
}

static const char *check_path(const char *s)
{
    if (strlen(s) > 4096 || has_ctl(s))
        return "must be a path without control characters (at most 4096 bytes)";
    return NULL;
}

/* ---- messages and paths ------------------------------------------------------------------ */

typedef struct ctx {
    sy_config *cfg;
    sy_errlist *errs;
    sy_errlist *warns;
    size_t nerr;
    bool nomem;
} ctx;

/* Copies a user-supplied key for display: control characters become '?', long keys are cut
 * (at a UTF-8 boundary) and marked with "...". Keeps every error one line. */
static void show(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    size_t keep = n;
    bool cut = false;

    if (keep > KEY_SHOW) {
        keep = KEY_SHOW;
        while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
            keep--;
        cut = true;
    }
    if (keep + 4 > cap)
        keep = cap > 4 ? cap - 4 : 0;
    for (size_t i = 0; i < keep; i++) {
        dst[i] = s[i];
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            dst[i] = '?';
    }
    if (cut) {
        memcpy(dst + keep, "...", 3);
        keep += 3;
    }
    dst[keep] = '\0';
}

/* snprintf that truncates on purpose: paths in messages have a cap (PATH_LEN). */
static void bounded(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bounded(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static void path_key(char *dst, const char *parent, const char *key)
{
    char k[KEY_SHOW + 4];

    show(k, sizeof(k), key);
    if (parent[0] == '\0')
        bounded(dst, PATH_LEN, "%s", k);
    else
        bounded(dst, PATH_LEN, "%s.%s", parent, k);
}

static void path_index(char *dst, const char *parent, size_t i)
{
    bounded(dst, PATH_LEN, "%s[%zu]", parent, i);
}

static void vline(sy_errlist *l, const char *path, const char *fmt, va_list ap)
{
    char msg[512];

    (void)vsnprintf(msg, sizeof(msg), fmt, ap); /* a long message is cut, on purpose */
    if (l != NULL)
        sy_errlist_add(l, "%s: %s", path, msg);
}

static void err_at(ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_at(ctx *c, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vline(c->errs, path, fmt, ap);
    va_end(ap);
    c->nerr++;
}

static void warn_at(ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warn_at(ctx *c, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vline(c->warns, path, fmt, ap);
    va_end(ap);
}

/* ---- typed storage ----------------------------------------------------------------------- */

_Static_assert(sizeof(sy_provider) == sizeof(int), "FT_ENUM stores an int-sized enum");

static long long itype_max(fint t)
{
    switch (t) {
    case FI_INT:
        return INT_MAX;
    case FI_LONG:
        return LONG_MAX;
    case FI_UINT:
        return UINT_MAX;
    case FI_SIZE:
        return SIZE_MAX > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)SIZE_MAX;
    }
    return 0;
}

static void int_store(void *p, fint t, long long v)
{
    switch (t) {
    case FI_INT:
        *(int *)p = (int)v;
        break;
    case FI_LONG:
        *(long *)p = (long)v;
        break;
    case FI_UINT:
        *(unsigned *)p = (unsigned)v;
        break;
    case FI_SIZE:
        *(size_t *)p = (size_t)v;
        break;
    }
}

static long long int_load(const void *p, fint t)
{
    switch (t) {
    case FI_INT:
        return *(const int *)p;
    case FI_LONG:
        return *(const long *)p;
    case FI_UINT:
        return *(const unsigned *)p;
    case FI_SIZE:
        return (long long)*(const size_t *)p;
    }
    return 0;
}

static const field *table_find(const table *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->fields[i].key, key) == 0)
            return &t->fields[i];
    return NULL;
}

/* An inheriting field takes its bounds (and default) from the same key of <inherit>. */
static const field *int_origin(const field *f)
{
    const field *o = f->inherit != NULL ? table_find(f->inherit, f->key) : NULL;

    return o != NULL ? o : f;
}

static void int_bounds(const field *f, long long *min, long long *max)
{
    const field *o = int_origin(f);

    *min = o->min;
    *max = o->max < itype_max(f->itype) ? o->max : itype_max(f->itype);
}

static int choice_index(const char *const *choices, const char *s)
{
    for (int i = 0; choices[i] != NULL; i++)
        if (strcmp(choices[i], s) == 0)
            return i;
    return -1;
}

static void choices_msg(char *dst, size_t cap, const char *const *choices)
{
    size_t n = 0;

    dst[0] = '\0';
    for (int i = 0; choices[i] != NULL && n < cap; i++)
        n += (size_t)snprintf(dst + n, cap - n, "%s\"%s\"", i ? ", " : "", choices[i]);
}

/* ---- the walker -------------------------------------------------------------------------- */

static void walk_object(ctx *c, const table *t, const json_t *obj, void *base, const char *path);
static void parse_deployments(ctx *c, const json_t *v, const char *path);
static void parse_aliases(ctx *c, const json_t *v, const char *path);

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[KEY_SHOW + 1];

    if (la > KEY_SHOW || lb > KEY_SHOW)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static bool is_secret_name(const char *key)
{
    static const char *const names[] = {"api_key",    "apikey",       "password", "passwd",
                                        "secret",     "key",          "token",    "master_key",
                                        "secret_key", "access_token", NULL};

    for (int i = 0; names[i] != NULL; i++)
        if (strcasecmp(names[i], key) == 0)
            return true;
    return false;
}

static void secret_err(ctx *c, const char *path, const char *hint)
{
    if (hint != NULL)
        err_at(c, path, "literal secrets are not allowed in config files; use %s", hint);
    else
        err_at(c, path,
               "literal secrets are not allowed in config files; name an environment variable "
               "instead");
}

static void unknown_key(ctx *c, const table *t, const char *key, const char *path)
{
    char kpath[PATH_LEN];
    char shown[KEY_SHOW + 4];
    const char *best = NULL;
    size_t bestd = SIZE_MAX;

    path_key(kpath, path, key);
    if (is_secret_name(key)) {
        secret_err(c, kpath, t->env_hint);
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t d = edit_distance(key, t->fields[i].key);
        if (d < bestd) {
            bestd = d;
            best = t->fields[i].key;
        }
    }
    show(shown, sizeof(shown), key);
    /* suggest only close misspellings, so a wrong guess never misleads */
    if (best != NULL && bestd <= 2 && bestd * 3 <= strlen(key))
        err_at(c, kpath, "unknown key '%s' (did you mean '%s'?)", shown, best);
    else
        err_at(c, kpath, "unknown key '%s'", shown);
}

/* Secret-named keys anywhere inside a raw value (e.g. "redis": {"password": "..."}). */
static void scan_secrets(ctx *c, const json_t *v, const char *path)
{
    char sub[PATH_LEN];
    const char *key;
    json_t *item;
    size_t i;

    if (json_is_object(v)) {
        /* json_object_foreach takes a non-const json_t; nothing is modified */
        json_object_foreach ((json_t *)v, key, item) {
            path_key(sub, path, key);
            if (is_secret_name(key))
                secret_err(c, sub, NULL);
            else
                scan_secrets(c, item, sub);
        }
    } else if (json_is_array(v)) {
        json_array_foreach (v, i, item) {
            path_index(sub, path, i);
            scan_secrets(c, item, sub);
        }
    }
}

static void listen_store(ctx *c, const char *s, sy_config *cfg, const char *path);

static bool parse_str(ctx *c, const field *f, const json_t *v, void *base, const char *path)
{
    char **dst = (char **)((char *)base + f->off);
    const char *s = json_string_value(v);
    size_t n;
    const char *why;
    char choices[128];

    if (s == NULL || s[0] == '\0' || strlen(s) != json_string_length(v)) {
        err_at(c, path, "must be a non-empty string");
        return false;
    }
    if (f->choices != NULL && choice_index(f->choices, s) < 0) {
        choices_msg(choices, sizeof(choices), f->choices);
        err_at(c, path, "must be one of %s", choices);
        return false;
    }
    if (f->check != NULL && (why = f->check(s)) != NULL) {
        err_at(c, path, "%s", why);
        return false;
    }
    n = strlen(s);
    while ((f->flags & FL_STRIP_SLASH) && n > 0 && s[n - 1] == '/')
        n--;
    xfree(*dst);
    if ((*dst = xstrndup(s, n)) == NULL)
        c->nomem = true;
    return true;
}

static bool parse_value(ctx *c, const field *f, const json_t *v, void *base, const char *path)
{
    void *p = (char *)base + f->off;
    long long min, max;
    char choices[128];

    switch (f->type) {
    case FT_STR:
        return parse_str(c, f, v, base, path);
    case FT_BOOL:
        if (!json_is_boolean(v)) {
            err_at(c, path, "must be true or false");
            return false;
        }
        *(bool *)p = json_is_true(v);
        return true;
    case FT_INT: {
        int_bounds(f, &min, &max);
        long long x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (!json_is_integer(v) || x < min || x > max) {
            if (max == itype_max(f->itype))
                err_at(c, path, "must be an integer >= %lld", min);
            else
                err_at(c, path, "must be an integer in %lld..%lld", min, max);
            return false;
        }
        int_store(p, f->itype, x);
        return true;
    }
    case FT_NUM: {
        double x = json_is_number(v) ? json_number_value(v) : NAN;
        if (!isfinite(x) || x < f->nmin || x > f->nmax) {
            if (isinf(f->nmax))
                err_at(c, path, "must be a number >= %g", f->nmin);
            else
                err_at(c, path, "must be a number in %g..%g", f->nmin, f->nmax);
            return false;
        }
        *(double *)p = x;
        return true;
    }
    case FT_ENUM: {
        int i = json_is_string(v) ? choice_index(f->choices, json_string_value(v)) : -1;
        if (i < 0) {
            choices_msg(choices, sizeof(choices), f->choices);
            err_at(c, path, "must be one of %s", choices);
            return false;
        }
        *(int *)p = i;
        return true;
    }
    case FT_OBJECT:
        if (!json_is_object(v)) {
            err_at(c, path, "must be an object");
            return false;
        }
        walk_object(c, f->sub, v, p, path);
        if (f->flags & FL_OPTIONAL)
            *(bool *)((char *)p + f->set_off) = true;
        return true;
    case FT_LISTEN:
        if (!json_is_string(v)) {
            err_at(c, path, "expected \"HOST:PORT\"");
            return false;
        }
        listen_store(c, json_string_value(v), c->cfg, path);
        return true;
    case FT_RAW:
        if (!json_is_null(v) && !json_is_object(v)) {
            err_at(c, path, "must be null or an object");
            return false;
        }
        scan_secrets(c, v, path);
        json_decref(*(json_t **)p);
        if ((*(json_t **)p = json_deep_copy(v)) == NULL)
            c->nomem = true;
        return true;
    case FT_DEPLOYMENTS:
        parse_deployments(c, v, path);
        return true;
    case FT_ALIASES:
        parse_aliases(c, v, path);
        return true;
    }
    return false;
}

/* Applies <f>'s default; required keys get no default (their absence is reported). */
static void set_default(ctx *c, const table *t, const field *f, void *base, const char *path)
{
    void *p = (char *)base + f->off;

    if (f->flags & (FL_REQUIRED | FL_ANTHROPIC))
        return;
    switch (f->type) {
    case FT_STR:
        if (f->def_str != NULL && *(char **)p == NULL &&
            (*(char **)p = xstrdup(f->def_str)) == NULL)
            c->nomem = true;
        break;
    case FT_BOOL:
        *(bool *)p = f->def_bool;
        break;
    case FT_INT:
        /* an inheriting field reads the already parsed value of the same key in the config */
        if (f->inherit != NULL)
            int_store(p, f->itype,
                      int_load((char *)c->cfg + int_origin(f)->off, int_origin(f)->itype));
        else
            int_store(p, f->itype, f->def_int);
        break;
    case FT_NUM: {
        const field *s = f->sibling != NULL ? table_find(t, f->sibling) : NULL;
        double x = f->def_num;
        if (s != NULL)
            memcpy(&x, (char *)base + s->off, sizeof(x));
        memcpy(p, &x, sizeof(x));
        break;
    }
    case FT_ENUM:
        *(int *)p = choice_index(f->choices, f->def_str);
        break;
    case FT_OBJECT:
        if (!(f->flags & FL_OPTIONAL))
            walk_object(c, f->sub, NULL, p, path);
        break;
    case FT_LISTEN:
        listen_store(c, f->def_str, c->cfg, path);
        break;
    case FT_RAW:
        *(json_t **)p = json_null(); /* a singleton: nothing allocated */
        break;
    case FT_DEPLOYMENTS:
    case FT_ALIASES:
        break;
    }
}

/* Unknown keys are reported first (in document order), then each field in table order: the
 * tables are ordered so that a field's dependencies (inherit, sibling) are parsed before it.
 * <obj> NULL applies every default. */
static void walk_object(ctx *c, const table *t, const json_t *obj, void *base, const char *path)
{
    char fpath[PATH_LEN];
    const char *key;
    json_t *v;

    if (obj != NULL) {
        json_object_foreach ((json_t *)obj, key, v) {
            if (table_find(t, key) == NULL)
                unknown_key(c, t, key, path);
        }
    }
    for (size_t i = 0; i < t->n && !c->nomem; i++) {
        const field *f = &t->fields[i];
        const json_t *fv = obj != NULL ? json_object_get(obj, f->key) : NULL;

        path_key(fpath, path, f->key);
        if (fv == NULL && (f->flags & FL_REQUIRED))
            err_at(c, fpath, "required key missing");
        else if (fv == NULL || !parse_value(c, f, fv, base, fpath))
            set_default(c, t, f, base, fpath); /* later checks see a sane value */
    }
}

/* ---- listen ------------------------------------------------------------------------------ */

/* Pure: finds host and port in <s> without allocating. */
static sy_err split_listen(const char *s, const char **host, size_t *hostlen, int *port)
{
    const char *colon, *h, *he;
    long p = 0;

    if (s == NULL)
        return SY_EINVAL;
    if (s[0] == '[') {
        h = s + 1;
        he = strchr(h, ']');
        if (he == NULL || he[1] != ':' || he == h)
            return SY_EINVAL;
        colon = he + 1;
        /* hex, ':' and '.', then an optional zone after '%' (fe80::1%eth0) */
        const char *zone = memchr(h, '%', (size_t)(he - h));
        for (const char *q = h; q < he; q++) {
            bool ok = zone != NULL && q > zone ? is_name_char((unsigned char)*q) && *q != ':'
                                               : strchr("0123456789abcdefABCDEF:.", *q) != NULL;
            if (!ok && q != zone)
                return SY_EINVAL;
        }
        if (zone == h || zone == he - 1)
            return SY_EINVAL;
        if (memchr(h, ':', (size_t)(he - h)) == NULL)
            return SY_EINVAL;
    } else {
        h = s;
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s)
            return SY_EINVAL;
        he = colon;
        for (const char *q = h; q < he; q++)
            if (!(is_name_char((unsigned char)*q) && *q != ':' && *q != '/'))
                return SY_EINVAL;
    }
    if ((size_t)(he - h) > 253)
        return SY_EINVAL;
    const char *d = colon + 1;
    if (*d == '\0' || strlen(d) > 5)
        return SY_EINVAL;
    for (; *d != '\0'; d++) {
        if (*d < '0' || *d > '9')
            return SY_EINVAL;
        p = p * 10 + (*d - '0');
    }
    if (p > 65535)
        return SY_EINVAL;
    *host = h;
    *hostlen = (size_t)(he - h);
    *port = (int)p;
    return SY_OK;
}

sy_err sy_config_parse_listen(const char *s, char **host, int *port)
{
    const char *h;
    size_t hl;
    int p;
    char *copy;
    sy_err rc = split_listen(s, &h, &hl, &p);

    if (rc != SY_OK)
        return rc;
    /* plain malloc, as the header promises: the caller frees with free() */
    if ((copy = malloc(hl + 1)) == NULL)
        return SY_ENOMEM;
    memcpy(copy, h, hl);
    copy[hl] = '\0';
    *host = copy;
    *port = p;
    return SY_OK;
}

static void listen_store(ctx *c, const char *s, sy_config *cfg, const char *path)
{
    const char *h;
    size_t hl;
    int p;

    if (split_listen(s, &h, &hl, &p) != SY_OK) {
        err_at(c, path, "expected \"HOST:PORT\"");
        return;
    }
    xfree(cfg->listen_host);
    if ((cfg->listen_host = xstrndup(h, hl)) == NULL)
        c->nomem = true;
    cfg->listen_port = p;
}

/* ---- deployments and aliases ------------------------------------------------------------- */

static void deployment_finish(ctx *c, sy_deployment *d, const json_t *v, const char *path)
{
    char fpath[PATH_LEN];
    const char *key;

    for (size_t j = 0; j < d->index; j++) {
        const sy_deployment *o = &c->cfg->deployments[j];
        if (d->name != NULL && o->name != NULL && strcmp(o->name, d->name) == 0) {
            path_key(fpath, path, "name");
            err_at(c, fpath, "duplicate deployment name '%s'", d->name);
            break;
        }
    }

    path_key(fpath, path, "anthropic_version");
    if (d->provider == SY_PROVIDER_ANTHROPIC && d->anthropic_version == NULL) {
        const field *f = table_find(&deployment_table, "anthropic_version");
        if ((d->anthropic_version = xstrdup(f->def_str)) == NULL)
            c->nomem = true;
    } else if (d->provider != SY_PROVIDER_ANTHROPIC &&
               json_object_get(v, "anthropic_version") != NULL) {
        err_at(c, fpath, "only allowed with provider \"anthropic\"");
    }

    /* a variable named but unset disables the deployment instead of failing the start */
    if (d->api_key_env != NULL) {
        key = getenv(d->api_key_env);
        path_key(fpath, path, "api_key_env");
        if (key == NULL || key[0] == '\0') {
            d->disabled = true;
            warn_at(c, fpath, "deployment '%s' disabled: environment variable %s is unset or empty",
                    d->name != NULL ? d->name : "?", d->api_key_env);
        } else if ((d->api_key = xstrdup(key)) == NULL) {
            c->nomem = true;
        }
    }
}

static void parse_deployments(ctx *c, const json_t *v, const char *path)
{
    char dpath[PATH_LEN];
    size_t n = json_array_size(v);

    if (!json_is_array(v) || n == 0) {
        err_at(c, path, "must be a non-empty array of objects");
        return;
    }
    if ((c->cfg->deployments = xcalloc(n, sizeof(sy_deployment))) == NULL) {
        c->nomem = true;
        return;
    }
    c->cfg->ndeployments = n;
    for (size_t i = 0; i < n && !c->nomem; i++) {
        const json_t *e = json_array_get(v, i);
        sy_deployment *d = &c->cfg->deployments[i];

        d->index = i;
        path_index(dpath, path, i);
        if (!json_is_object(e)) {
            err_at(c, dpath, "must be an object");
            continue;
        }
        walk_object(c, &deployment_table, e, d, dpath);
        if (!c->nomem)
            deployment_finish(c, d, e, dpath);
    }
}

static const sy_deployment *find_deployment(const sy_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ndeployments; i++)
        if (cfg->deployments[i].name != NULL && strcmp(cfg->deployments[i].name, name) == 0)
            return &cfg->deployments[i];
    return NULL;
}

static void parse_alias(ctx *c, sy_alias *a, const char *name, const json_t *list,
                        const json_t *all, const char *apath)
{
    char tpath[PATH_LEN];
    char shown[KEY_SHOW + 4];
    size_t n = json_array_size(list);
    size_t i;
    json_t *item;

    if (!valid_name(name)) {
        err_at(c, apath, "alias name must match [A-Za-z0-9._:/-]+ (at most 128 characters)");
        return;
    }
    if (find_deployment(c->cfg, name) != NULL)
        err_at(c, apath, "alias shadows deployment '%s'", name);
    if (!json_is_array(list) || n == 0) {
        err_at(c, apath, "must be a non-empty array of deployment names");
        return;
    }
    if ((a->name = xstrdup(name)) == NULL || (a->targets = xcalloc(n, sizeof(size_t))) == NULL) {
        c->nomem = true;
        return;
    }
    json_array_foreach (list, i, item) {
        const char *t = json_string_value(item);
        const sy_deployment *d = t != NULL ? find_deployment(c->cfg, t) : NULL;

        path_index(tpath, apath, i);
        if (t == NULL) {
            err_at(c, tpath, "must be a string");
            continue;
        }
        show(shown, sizeof(shown), t);
        if (d == NULL && json_object_get(all, t) != NULL) {
            err_at(c, tpath, "'%s' is an alias; aliases list deployments only", shown);
            continue;
        }
        if (d == NULL) {
            err_at(c, tpath, "unknown deployment '%s'", shown);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < a->ntargets; j++)
            dup = dup || a->targets[j] == d->index;
        if (dup) {
            err_at(c, tpath, "duplicate target '%s'", shown);
            continue;
        }
        a->targets[a->ntargets++] = d->index;
    }
}

static void parse_aliases(ctx *c, const json_t *v, const char *path)
{
    char apath[PATH_LEN];
    const char *key;
    json_t *list;

    if (!json_is_object(v)) {
        err_at(c, path, "must be an object of alias name -> array of deployment names");
        return;
    }
    if (json_object_size(v) == 0)
        return;
    if ((c->cfg->aliases = xcalloc(json_object_size(v), sizeof(sy_alias))) == NULL) {
        c->nomem = true;
        return;
    }
    json_object_foreach ((json_t *)v, key, list) {
        path_key(apath, path, key);
        /* each slot is counted before it is filled, so a partial alias is freed too */
        parse_alias(c, &c->cfg->aliases[c->cfg->naliases++], key, list, v, apath);
        if (c->nomem)
            return;
    }
}

/* ---- whole config ------------------------------------------------------------------------ */

static void config_free(sy_config *cfg)
{
    if (cfg == NULL)
        return;
    xfree(cfg->listen_host);
    xfree(cfg->data_dir);
    xfree(cfg->files_dir);
    xfree(cfg->routes_dir);
    xfree(cfg->prices_path);
    json_decref(cfg->redis);
    json_decref(cfg->mem_store);
    xfree(cfg->config_path);
    xfree(cfg->config_dir);
    xfree(cfg->master_key_env);
    wipe_free(cfg->master_key);
    xfree(cfg->log_level);
    for (size_t i = 0; i < cfg->ndeployments; i++) {
        sy_deployment *d = &cfg->deployments[i];
        xfree(d->name);
        xfree(d->base_url);
        xfree(d->model);
        xfree(d->api_key_env);
        wipe_free(d->api_key);
        xfree(d->tier_hint);
        xfree(d->anthropic_version);
    }
    xfree(cfg->deployments);
    for (size_t i = 0; i < cfg->naliases; i++) {
        xfree(cfg->aliases[i].name);
        xfree(cfg->aliases[i].targets);
    }
    xfree(cfg->aliases);
    sy_routes_free(cfg->routes);
    xfree(cfg);
}

/* Checks across keys, once every key has its value. */
static void cross_checks(ctx *c)
{
    sy_config *cfg = c->cfg;
    const char *key;

    /* The store module owns the meaning of "redis" and "mem_store"; validate them here so
     * check and reload report their problems like any other key's. */
    sy_store_opts so;
    sy_errlist serrs;
    sy_store_opts_init(&so);
    sy_errlist_init(&serrs);
    sy_err r1 = sy_store_config_parse(cfg->redis, &so, &serrs);
    sy_err r2 = sy_store_config_parse_mem(cfg->mem_store, &so, &serrs);
    if (r1 == SY_ENOMEM || r2 == SY_ENOMEM)
        c->nomem = true;
    for (size_t i = 0; i < serrs.n; i++) {
        /* already "redis.<key>: ..."; a path the secret scan reported once stays reported once */
        const char *colon = strstr(serrs.items[i], ": ");
        size_t plen = colon != NULL ? (size_t)(colon - serrs.items[i]) + 2 : 0;
        bool dup = false;
        for (size_t k = 0; c->errs != NULL && plen > 0 && k < c->errs->n && !dup; k++)
            dup = strncmp(c->errs->items[k], serrs.items[i], plen) == 0;
        if (dup)
            continue;
        if (c->errs != NULL)
            sy_errlist_add(c->errs, "%s", serrs.items[i]);
        c->nerr++;
    }
    if (serrs.n == 0 && (r1 == SY_ECONFIG || r2 == SY_ECONFIG))
        err_at(c, "redis", "invalid store settings");
    sy_store_opts_cleanup(&so);
    sy_errlist_cleanup(&serrs);
    if (cfg->retry_max_ms < cfg->retry_base_ms)
        err_at(c, "upstream.retry_max_ms", "must be >= upstream.retry_base_ms (%ld)",
               cfg->retry_base_ms);
    if (cfg->master_key_env != NULL) {
        key = getenv(cfg->master_key_env);
        if (key != NULL && key[0] != '\0') {
            if ((cfg->master_key = xstrdup(key)) == NULL)
                c->nomem = true;
        } else if (cfg->require_keys) {
            warn_at(c, "auth.master_key_env",
                    "environment variable %s is unset or empty: /admin endpoints are disabled",
                    cfg->master_key_env);
        }
    }
}

static sy_err build(const json_t *root, const char *dir, const char *path, sy_config **out,
                    sy_errlist *errs, sy_errlist *warns)
{
    ctx c = {.errs = errs, .warns = warns};
    sy_config *cfg = xcalloc(1, sizeof(*cfg));
    sy_err rc = SY_ENOMEM;

    if (cfg == NULL)
        goto out;
    c.cfg = cfg;
    cfg->refs = 1;
    if ((cfg->config_dir = xstrdup(dir != NULL ? dir : ".")) == NULL)
        goto out;
    if (path != NULL && (cfg->config_path = xstrdup(path)) == NULL)
        goto out;
    rc = SY_ECONFIG;
    if (!json_is_object(root)) {
        err_at(&c, "(top level)", "must be an object");
        goto out;
    }
    walk_object(&c, &top_table, root, cfg, "");
    if (!c.nomem)
        cross_checks(&c);
    if (c.nomem) {
        rc = SY_ENOMEM;
        goto out;
    }
    if (c.nerr > 0)
        goto out;
    for (size_t i = 0; i < cfg->ndeployments; i++) {
        /* runtime state is keyed by name, so it survives reloads */
        if ((cfg->deployments[i].health = sy_health_get(cfg->deployments[i].name)) == NULL) {
            rc = SY_ENOMEM;
            goto out;
        }
    }
    *out = cfg;
    cfg = NULL; /* the caller owns it now */
    rc = SY_OK;
out:
    if (rc == SY_ENOMEM && errs != NULL)
        sy_errlist_add(errs, "%s: out of memory", path != NULL ? path : "(config)");
    config_free(cfg);
    return rc;
}

sy_err sy_config_parse(const json_t *root, const char *dir, sy_config **out, sy_errlist *errs,
                       sy_errlist *warns)
{
    return build(root, dir, NULL, out, errs, warns);
}

/* Every deployment without an explicit price takes the prices file's (prices.h), so d->price is
 * always the effective price; one without either is an error (DESIGN §4: 0 must be explicit).
 * The file is read only when a deployment needs it. Only sy_config_load does this:
 * sy_config_parse does no file I/O. */
static sy_err resolve_prices(sy_config *cfg, sy_errlist *errs)
{
    sy_prices *list = NULL;
    sy_errlist perrs;
    sy_err rc = SY_OK;
    size_t need = 0;

    for (size_t i = 0; i < cfg->ndeployments; i++)
        need += cfg->deployments[i].price.set ? 0 : 1;
    if (need == 0)
        return SY_OK;
    sy_errlist_init(&perrs);
    rc = sy_prices_load(cfg->prices_path, &list, &perrs);
    for (size_t i = 0; i < perrs.n; i++)
        sy_errlist_add(errs, "prices: %s", perrs.items[i]);
    sy_errlist_cleanup(&perrs);
    if (rc == SY_OK || rc == SY_ECONFIG)
        rc = sy_prices_apply(list, cfg->prices_path, cfg, errs) > 0 ? SY_ECONFIG : rc;
    sy_prices_free(list);
    return rc;
}

sy_err sy_config_load(const char *path, sy_config **out, sy_errlist *errs, sy_errlist *warns)
{
    json_t *root = NULL;
    char *dir = NULL;
    const char *slash = strrchr(path, '/');
    sy_err rc;

    if ((rc = sy_json_load_file(path, CONFIG_MAX_BYTES, &root, errs)) != SY_OK)
        goto out;
    rc = SY_ENOMEM;
    if (slash == NULL)
        dir = xstrdup(".");
    else
        dir = xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir == NULL) {
        sy_errlist_add(errs, "%s: out of memory", path);
        goto out;
    }
    sy_config *cfg = NULL;
    rc = build(root, dir, path, &cfg, errs, warns);
    if (rc == SY_OK) {
        /* Prices before routes; both run so that check lists every problem. */
        sy_err prc = resolve_prices(cfg, errs);
        /* Routes name deployments, so they are checked against this config; a broken route
         * file fails the whole load (a reload then changes nothing). */
        rc = cfg->routes_dir != NULL ? sy_routes_load(cfg->routes_dir, cfg, &cfg->routes, errs)
                                     : SY_OK;
        if (prc != SY_OK && rc != SY_ENOMEM)
            rc = prc;
        if (rc == SY_OK) {
            *out = cfg;
            cfg = NULL;
        }
        sy_config_unref(cfg);
    }
out:
    xfree(dir);
    json_decref(root);
    return rc;
}

sy_config *sy_config_ref(sy_config *c)
{
    if (c != NULL)
        __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void sy_config_unref(sy_config *c)
{
    /* acq_rel: the freeing thread sees every other thread's last use of the config */
    if (c != NULL && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        config_free(c);
}

const sy_deployment *sy_config_deployment(const sy_config *c, const char *name)
{
    return c != NULL && name != NULL ? find_deployment(c, name) : NULL;
}

const sy_alias *sy_config_alias(const sy_config *c, const char *name)
{
    if (c == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < c->naliases; i++)
        if (c->aliases[i].name != NULL && strcmp(c->aliases[i].name, name) == 0)
            return &c->aliases[i];
    return NULL;
}

/* ---- documentation ----------------------------------------------------------------------- */

/* Output errors are not checked per call: sy_config_doc tests ferror() once at the end. */
static void emit(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(FILE *out, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vfprintf(out, fmt, ap);
    va_end(ap);
}

/* Markdown table cells: '|' must be escaped. */
static void cell(FILE *out, const char *s)
{
    for (; *s != '\0'; s++)
        emit(out, *s == '|' ? "\\%c" : "%c", *s);
}

static const char *type_name(const field *f)
{
    switch (f->type) {
    case FT_STR:
    case FT_ENUM:
    case FT_LISTEN:
        return "string";
    case FT_BOOL:
        return "boolean";
    case FT_INT:
        return "integer";
    case FT_NUM:
        return "number";
    case FT_OBJECT:
        return "object";
    case FT_RAW:
        return "null or object";
    case FT_DEPLOYMENTS:
        return "array of objects";
    case FT_ALIASES:
        return "object of arrays of strings";
    }
    return "?";
}

static void doc_default(FILE *out, const field *f)
{
    if (f->flags & FL_REQUIRED) {
        emit(out, "%s", "**required**");
        return;
    }
    switch (f->type) {
    case FT_STR:
    case FT_ENUM:
    case FT_LISTEN:
        if (f->def_str != NULL)
            emit(out, "`\"%s\"`%s", f->def_str, (f->flags & FL_ANTHROPIC) ? " (anthropic)" : "");
        else
            emit(out, "%s", "none");
        break;
    case FT_BOOL:
        emit(out, "%s", f->def_bool ? "`true`" : "`false`");
        break;
    case FT_INT:
        if (int_origin(f) != f)
            emit(out, "`%s.%s`", f->inherit->path, f->key);
        else
            emit(out, "`%lld`", f->def_int);
        break;
    case FT_NUM:
        if (f->sibling != NULL)
            emit(out, "same as `%s`", f->sibling);
        else
            emit(out, "`%g`", f->def_num);
        break;
    case FT_OBJECT:
        emit(out, "%s", (f->flags & FL_OPTIONAL) ? "none" : "all defaults");
        break;
    case FT_RAW:
        emit(out, "%s", "`null`");
        break;
    case FT_DEPLOYMENTS:
        break;
    case FT_ALIASES:
        emit(out, "%s", "`{}`");
        break;
    }
}

static void doc_bounds(FILE *out, const field *f)
{
    long long min, max;

    if (f->type == FT_INT) {
        int_bounds(f, &min, &max);
        if (max == itype_max(f->itype))
            emit(out, ">= %lld", min);
        else
            emit(out, "%lld..%lld", min, max);
    } else if (f->type == FT_NUM) {
        if (isinf(f->nmax))
            emit(out, ">= %g", f->nmin);
        else
            emit(out, "%g..%g", f->nmin, f->nmax);
    } else if (f->choices != NULL) {
        for (int i = 0; f->choices[i] != NULL; i++)
            emit(out, "%s`%s`", i ? " \\| " : "", f->choices[i]);
    } else if (f->bounds_doc != NULL) {
        cell(out, f->bounds_doc);
    } else if (f->type == FT_STR) {
        emit(out, "%s", "non-empty");
    }
}

static void doc_table(FILE *out, const table *t)
{
    emit(out, "\n### %s\n\n%s\n\n", t->title, t->intro);
    emit(out, "%s", "| key | type | default | bounds | meaning |\n");
    emit(out, "%s", "|---|---|---|---|---|\n");
    for (size_t i = 0; i < t->n; i++) {
        const field *f = &t->fields[i];
        emit(out, "| `%s%s%s` | %s | ", t->path, t->path[0] ? "." : "", f->key, type_name(f));
        doc_default(out, f);
        emit(out, "%s", " | ");
        doc_bounds(out, f);
        emit(out, "%s", " | ");
        cell(out, f->doc);
        emit(out, "%s", " |\n");
    }
    for (size_t i = 0; i < t->n; i++)
        if (t->fields[i].sub != NULL)
            doc_table(out, t->fields[i].sub);
}

sy_err sy_config_doc(FILE *out)
{
    emit(out, "%s", "## Every key\n\n");
    emit(out, "%s",
         "Generated from the descriptor tables in `src/config.c` that also drive parsing, so "
         "it cannot drift.\nUnknown keys are errors; every problem is reported with its JSON "
         "path, all at once.\n");
    doc_table(out, &top_table);
    return ferror(out) ? SY_EINTERNAL : SY_OK;
}
