/* store: configuration (one descriptor table per JSON object drives parsing, defaults, bounds
 * and the generated docs), argument validation shared by both backends, and dispatch. Arguments
 * are checked here once, so the embedded store and Redis reject exactly the same calls. */
#include "switchyard/store.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

/* ---- allocator ------------------------------------------------------------------------------ */

static void *(*a_malloc)(size_t) = malloc;
static void *(*a_realloc)(void *, size_t) = realloc;
static void (*a_free)(void *) = free;

void sy_store_set_allocator(void *(*alloc)(size_t), void *(*resize)(void *, size_t),
                            void (*release)(void *))
{
    a_malloc = alloc ? alloc : malloc;
    a_realloc = resize ? resize : realloc;
    a_free = release ? release : free;
}

void *sy_store__malloc(size_t n)
{
    return a_malloc(n ? n : 1);
}

void *sy_store__calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *p = sy_store__malloc(n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

void *sy_store__realloc(void *p, size_t n)
{
    return a_realloc(p, n ? n : 1);
}

void sy_store__free(void *p)
{
    a_free(p);
}

char *sy_store__memdup0(const void *p, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *d = sy_store__malloc(n + 1);
    if (d == NULL)
        return NULL;
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

char *sy_store__strdup(const char *s)
{
    return sy_store__memdup0(s, strlen(s));
}

int64_t sy_store__mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- stream ids ----------------------------------------------------------------------------- */

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool sy_sid_parse(const char *s, uint64_t dflt_seq, sy_sid *out)
{
    const char *dash;
    sy_sid id;

    if (s == NULL)
        return false;
    dash = strchr(s, '-');
    if (dash == NULL) {
        if (!parse_u64(s, strlen(s), &id.ms))
            return false;
        id.seq = dflt_seq;
    } else if (!parse_u64(s, (size_t)(dash - s), &id.ms) ||
               !parse_u64(dash + 1, strlen(dash + 1), &id.seq)) {
        return false;
    }
    *out = id;
    return true;
}

void sy_sid_format(sy_sid id, char out[SY_STREAM_ID_MAX])
{
    (void)snprintf(out, SY_STREAM_ID_MAX, "%" PRIu64 "-%" PRIu64, id.ms, id.seq);
}

int sy_sid_cmp(sy_sid a, sy_sid b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

/* ---- results -------------------------------------------------------------------------------- */

void sy_store_kvs_init(sy_store_kvs *k)
{
    k->items = NULL;
    k->n = 0;
}

void sy_store_kvs_cleanup(sy_store_kvs *k)
{
    for (size_t i = 0; i < k->n; i++) {
        sy_store__free(k->items[i].name);
        sy_store__free(k->items[i].value);
    }
    sy_store__free(k->items);
    k->items = NULL;
    k->n = 0;
}

void sy_stream_entries_init(sy_stream_entries *e)
{
    e->items = NULL;
    e->n = 0;
}

void sy_stream_entries_cleanup(sy_stream_entries *e)
{
    for (size_t i = 0; i < e->n; i++)
        sy_store_kvs_cleanup(&e->items[i].fields);
    sy_store__free(e->items);
    e->items = NULL;
    e->n = 0;
}

/* ---- configuration -------------------------------------------------------------------------- */

typedef enum ctype { CT_URL, CT_ENV, CT_INT, CT_LONG, CT_SIZE, CT_PREFIX } ctype;

typedef struct cfield {
    const char *key;
    ctype type;
    size_t off; /* in sy_store_redis_opts or sy_store_mem_opts */
    long long def;
    long long min, max;
    const char *def_str;
    bool required;
    const char *bounds_doc;
    const char *doc;
} cfield;

typedef struct ctable {
    const char *path;
    const char *intro;
    const cfield *fields;
    size_t n;
} ctable;

/* clang-format off */
static const cfield redis_fields[] = {
    {.key = "url", .type = CT_URL, .off = offsetof(sy_store_redis_opts, url), .required = true,
     .bounds_doc = "`redis://[user@]host[:port][/db]` or `unix:///path[?db=N]`; `rediss://` "
                   "(TLS) is rejected: Debian 12's hiredis 0.14.1 has no TLS",
     .doc = "where Redis listens; a password in the URL is an error (use `password_env`)"},
    {.key = "password_env", .type = CT_ENV, .off = offsetof(sy_store_redis_opts, password_env),
     .bounds_doc = "an environment variable name that is set",
     .doc = "environment variable holding the Redis password (AUTH); unset = no AUTH"},
    {.key = "timeout_ms", .type = CT_LONG, .off = offsetof(sy_store_redis_opts, timeout_ms),
     .def = 50, .min = 1, .max = 60000,
     .doc = "deadline of every call (pool wait, write and read); also the connect timeout"},
    {.key = "pool", .type = CT_INT, .off = offsetof(sy_store_redis_opts, pool), .def = 4,
     .min = 1, .max = 256, .doc = "connections in the pool"},
    {.key = "key_prefix", .type = CT_PREFIX, .off = offsetof(sy_store_redis_opts, key_prefix),
     .def_str = "sy:", .bounds_doc = "0..64 printable bytes without `{`, `}` or spaces",
     .doc = "prepended to every key, so several deployments can share one Redis"},
    {.key = "max_value_bytes", .type = CT_SIZE,
     .off = offsetof(sy_store_redis_opts, max_value_bytes), .def = 1048576, .min = 1,
     .max = 512LL << 20, .doc = "largest value stored (larger writes fail, e.g. a cache entry)"},
};

static const cfield mem_fields[] = {
    {.key = "max_bytes", .type = CT_SIZE, .off = offsetof(sy_store_mem_opts, max_bytes),
     .def = 64LL << 20, .min = 65536, .max = 1LL << 40,
     .doc = "memory cap of the embedded store; keys with a TTL are evicted LRU-first"},
    {.key = "max_value_bytes", .type = CT_SIZE, .off = offsetof(sy_store_mem_opts, max_value_bytes),
     .def = 1048576, .min = 1, .max = 512LL << 20,
     .doc = "largest value stored by the embedded store"},
};

/* clang-format on */

static const ctable redis_table = {
    "redis",
    "Shared state in Redis (used when `redis` is an object; `null` uses the embedded store).",
    redis_fields, sizeof(redis_fields) / sizeof(redis_fields[0])};

static const ctable mem_table = {"mem_store",
                                 "The embedded in-process store, used when `redis` is `null`.",
                                 mem_fields, sizeof(mem_fields) / sizeof(mem_fields[0])};

static void set_defaults(const ctable *t, void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        const cfield *f = &t->fields[i];
        char *p = (char *)base + f->off;

        switch (f->type) {
        case CT_INT:
            *(int *)(void *)p = (int)f->def;
            break;
        case CT_LONG:
            *(long *)(void *)p = (long)f->def;
            break;
        case CT_SIZE:
            *(size_t *)(void *)p = (size_t)f->def;
            break;
        case CT_URL:
        case CT_ENV:
        case CT_PREFIX:
            break; /* strings are set by the parser (key_prefix: see below) */
        }
    }
}

void sy_store_opts_init(sy_store_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->kind = SY_STORE_MEM;
    set_defaults(&redis_table, &o->redis);
    set_defaults(&mem_table, &o->mem);
}

static void redis_opts_cleanup(sy_store_redis_opts *r)
{
    sy_store__free(r->url);
    sy_store__free(r->host);
    sy_store__free(r->unix_path);
    sy_store__free(r->user);
    sy_store__free(r->password_env);
    if (r->password != NULL) {
        explicit_bzero(r->password, strlen(r->password));
        sy_store__free(r->password);
    }
    sy_store__free(r->key_prefix);
    r->url = r->host = r->unix_path = r->user = r->password_env = r->password = NULL;
    r->key_prefix = NULL;
}

void sy_store_opts_cleanup(sy_store_opts *o)
{
    redis_opts_cleanup(&o->redis);
}

typedef struct pctx {
    sy_errlist *errs;
    int problems;
    bool nomem;
} pctx;

static void perr(pctx *c, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void perr(pctx *c, const char *path, const char *key, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->problems++;
    if (key != NULL)
        sy_errlist_add(c->errs, "%s.%s: %s", path, key, msg);
    else
        sy_errlist_add(c->errs, "%s: %s", path, msg);
}

static bool keep(pctx *c, char **dst, char *s)
{
    if (s == NULL) {
        c->nomem = true;
        return false;
    }
    sy_store__free(*dst);
    *dst = s;
    return true;
}

/* Parses a decimal in [min, max] from s[0..n). */
static bool parse_dec(const char *s, size_t n, long long min, long long max, long long *out)
{
    uint64_t v;

    if (!parse_u64(s, n, &v) || v > (uint64_t)max || (long long)v < min)
        return false;
    *out = (long long)v;
    return true;
}

static void parse_url(pctx *c, const cfield *f, const char *url, sy_store_redis_opts *r)
{
    const char *path = redis_table.path;
    long long num;

    if (strncmp(url, "rediss://", 9) == 0) {
        perr(c, path, f->key,
             "TLS (rediss://) is not supported: hiredis 0.14.1 on Debian 12 is built without "
             "SSL; use redis:// on a private network, a unix socket, or a local TLS tunnel");
        return;
    }
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        const char *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);

        if (plen == 0 || p[0] != '/') {
            perr(c, path, f->key, "unix:// needs an absolute socket path (unix:///path)");
            return;
        }
        if (plen >= 108) {
            perr(c, path, f->key, "unix socket path longer than 107 bytes");
            return;
        }
        r->db = 0;
        if (q != NULL) {
            if (strncmp(q, "?db=", 4) != 0 || !parse_dec(q + 4, strlen(q + 4), 0, 1000000, &num)) {
                perr(c, path, f->key, "the only query allowed is ?db=N (N in 0..1000000)");
                return;
            }
            r->db = (int)num;
        }
        if (keep(c, &r->unix_path, sy_store__memdup0(p, plen))) {
            sy_store__free(r->host);
            r->host = NULL;
        }
        return;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        perr(c, path, f->key, "must start with redis:// or unix://");
        return;
    }

    const char *a = url + 8;
    const char *slash = strchr(a, '/');
    size_t alen = slash ? (size_t)(slash - a) : strlen(a);
    const char *at = memrchr(a, '@', alen);
    const char *hp = a;
    size_t hplen = alen;
    const char *user = NULL;
    size_t ulen = 0;

    if (strchr(a, '?') != NULL || strchr(a, '#') != NULL) {
        perr(c, path, f->key, "query strings are not supported in redis:// URLs");
        return;
    }
    if (at != NULL) {
        /* never echo the userinfo: it may hold a password */
        if (memchr(a, ':', (size_t)(at - a)) != NULL) {
            perr(c, path, f->key,
                 "credentials in the URL are not allowed; name the password's environment "
                 "variable in redis.password_env");
            return;
        }
        user = a;
        ulen = (size_t)(at - a);
        hp = at + 1;
        hplen = alen - ulen - 1;
    }

    const char *host = hp;
    size_t hlen;
    const char *port = NULL;
    size_t portlen = 0;

    if (hplen > 0 && hp[0] == '[') {
        const char *rb = memchr(hp, ']', hplen);
        if (rb == NULL) {
            perr(c, path, f->key, "unterminated [IPv6] host");
            return;
        }
        host = hp + 1;
        hlen = (size_t)(rb - hp - 1);
        if (rb + 1 < hp + hplen) {
            if (rb[1] != ':') {
                perr(c, path, f->key, "expected ':' after ']'");
                return;
            }
            port = rb + 2;
            portlen = (size_t)(hp + hplen - port);
        }
    } else {
        const char *colon = memrchr(hp, ':', hplen);
        hlen = colon ? (size_t)(colon - hp) : hplen;
        if (colon != NULL) {
            port = colon + 1;
            portlen = (size_t)(hp + hplen - port);
        }
    }
    if (hlen == 0 || hlen > 253) {
        perr(c, path, f->key, "missing or overlong host");
        return;
    }
    r->port = 6379;
    if (port != NULL) {
        if (!parse_dec(port, portlen, 1, 65535, &num)) {
            perr(c, path, f->key, "port must be in 1..65535");
            return;
        }
        r->port = (int)num;
    }
    r->db = 0;
    if (slash != NULL && slash[1] != '\0') {
        if (!parse_dec(slash + 1, strlen(slash + 1), 0, 1000000, &num)) {
            perr(c, path, f->key, "the path must be a database number in 0..1000000");
            return;
        }
        r->db = (int)num;
    }
    if (!keep(c, &r->host, sy_store__memdup0(host, hlen)))
        return;
    if (user != NULL && ulen > 0 && !keep(c, &r->user, sy_store__memdup0(user, ulen)))
        return;
    sy_store__free(r->unix_path);
    r->unix_path = NULL;
}

static bool env_name_ok(const char *s)
{
    if (s[0] == '\0' || strlen(s) > 128 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

static bool prefix_ok(const char *s)
{
    if (strlen(s) > SY_STORE_PREFIX_MAX)
        return false;
    for (; *s; s++)
        if (*s <= ' ' || *s >= 127 || *s == '{' || *s == '}')
            return false;
    return true;
}

static const char *type_word(ctype t)
{
    return (t == CT_INT || t == CT_LONG || t == CT_SIZE) ? "integer" : "string";
}

static void parse_field(pctx *c, const ctable *t, const cfield *f, const json_t *v, void *base)
{
    char *p = (char *)base + f->off;
    const char *s = json_string_value(v);

    if (f->type == CT_INT || f->type == CT_LONG || f->type == CT_SIZE) {
        json_int_t n = json_integer_value(v);
        if (!json_is_integer(v) || n < f->min || n > f->max) {
            perr(c, t->path, f->key, "must be an integer in %lld..%lld", f->min, f->max);
            return;
        }
        if (f->type == CT_INT)
            *(int *)(void *)p = (int)n;
        else if (f->type == CT_LONG)
            *(long *)(void *)p = (long)n;
        else
            *(size_t *)(void *)p = (size_t)n;
        return;
    }
    if (s == NULL || strlen(s) != json_string_length(v)) {
        perr(c, t->path, f->key, "must be a string");
        return;
    }
    switch (f->type) {
    case CT_URL:
        if (keep(c, (char **)(void *)p, sy_store__strdup(s)))
            parse_url(c, f, s, base);
        break;
    case CT_ENV: {
        sy_store_redis_opts *r = base;
        const char *val;

        if (!env_name_ok(s)) {
            perr(c, t->path, f->key,
                 "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
            break;
        }
        val = getenv(s);
        if (val == NULL || val[0] == '\0') {
            perr(c, t->path, f->key, "environment variable %s is not set", s);
            break;
        }
        if (keep(c, &r->password_env, sy_store__strdup(s))) {
            char *pw = sy_store__strdup(val);
            if (pw == NULL) {
                c->nomem = true;
                break;
            }
            if (r->password != NULL) {
                explicit_bzero(r->password, strlen(r->password));
                sy_store__free(r->password);
            }
            r->password = pw;
        }
        break;
    }
    case CT_PREFIX:
        if (!prefix_ok(s)) {
            perr(c, t->path, f->key, "%s", f->bounds_doc);
            break;
        }
        (void)keep(c, (char **)(void *)p, sy_store__strdup(s));
        break;
    default:
        break;
    }
}

static bool secret_key(const char *k)
{
    static const char *const names[] = {"password", "passwd", "pass", "auth",
                                        "secret",   "token",  NULL};
    for (int i = 0; names[i] != NULL; i++)
        if (strcasecmp(names[i], k) == 0)
            return true;
    return false;
}

static sy_err parse_object(const ctable *t, const json_t *obj, void *base, sy_errlist *errs)
{
    pctx c = {errs, 0, false};
    const char *key;
    json_t *v;

    if (!json_is_object(obj)) {
        perr(&c, t->path, NULL, "must be null or an object");
        return SY_ECONFIG;
    }
    /* json_object_foreach wants a non-const json_t; nothing is modified */
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i;
        for (i = 0; i < t->n; i++)
            if (strcmp(t->fields[i].key, key) == 0)
                break;
        if (i == t->n) {
            char shown[65];
            (void)snprintf(shown, sizeof(shown), "%s", key);
            if (secret_key(key))
                perr(&c, t->path, shown,
                     "literal secrets are not allowed in config files; use password_env");
            else
                perr(&c, t->path, shown, "unknown key '%s'", shown);
            continue;
        }
        parse_field(&c, t, &t->fields[i], v, base);
    }
    for (size_t i = 0; i < t->n; i++)
        if (t->fields[i].required && json_object_get(obj, t->fields[i].key) == NULL)
            perr(&c, t->path, t->fields[i].key, "required");
    if (c.nomem) {
        sy_errlist_add(errs, "%s: out of memory", t->path);
        return SY_ENOMEM;
    }
    return c.problems ? SY_ECONFIG : SY_OK;
}

sy_err sy_store_config_parse(const json_t *redis, sy_store_opts *out, sy_errlist *errs)
{
    sy_err rc;

    if (redis == NULL || json_is_null(redis)) {
        out->kind = SY_STORE_MEM;
        return SY_OK;
    }
    rc = parse_object(&redis_table, redis, &out->redis, errs);
    if (rc == SY_OK && out->redis.key_prefix == NULL) {
        const char *def = "";
        for (size_t i = 0; i < redis_table.n; i++)
            if (redis_fields[i].type == CT_PREFIX)
                def = redis_fields[i].def_str;
        out->redis.key_prefix = sy_store__strdup(def);
        if (out->redis.key_prefix == NULL) {
            sy_errlist_add(errs, "redis: out of memory");
            rc = SY_ENOMEM;
        }
    }
    if (rc == SY_OK)
        out->kind = SY_STORE_REDIS;
    return rc;
}

sy_err sy_store_config_parse_mem(const json_t *mem_store, sy_store_opts *out, sy_errlist *errs)
{
    if (mem_store == NULL || json_is_null(mem_store))
        return SY_OK;
    return parse_object(&mem_table, mem_store, &out->mem, errs);
}

static void doc_table(FILE *out, const ctable *t)
{
    (void)fprintf(out, "\n### `%s`\n\n%s\n\n", t->path, t->intro);
    (void)fprintf(out, "| key | type | default | bounds | meaning |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < t->n; i++) {
        const cfield *f = &t->fields[i];
        (void)fprintf(out, "| `%s.%s` | %s | ", t->path, f->key, type_word(f->type));
        if (f->required)
            (void)fprintf(out, "**required**");
        else if (f->def_str != NULL)
            (void)fprintf(out, "`\"%s\"`", f->def_str);
        else if (f->type == CT_ENV || f->type == CT_URL)
            (void)fprintf(out, "none");
        else
            (void)fprintf(out, "`%lld`", f->def);
        (void)fprintf(out, " | ");
        if (f->bounds_doc != NULL)
            (void)fprintf(out, "%s", f->bounds_doc);
        else
            (void)fprintf(out, "%lld..%lld", f->min, f->max);
        (void)fprintf(out, " | %s |\n", f->doc);
    }
}

/* Output errors are not checked per call: ferror() once at the end. */
sy_err sy_store_config_doc(FILE *out)
{
    doc_table(out, &redis_table);
    doc_table(out, &mem_table);
    return ferror(out) ? SY_EINTERNAL : SY_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

sy_err sy_store_new(const sy_store_opts *opts, sy_store **out)
{
    return opts->kind == SY_STORE_REDIS ? sy_store_redis_new(opts, out)
                                        : sy_store_mem_new(opts, out);
}

void sy_store__init_head(sy_store *s, const sy_store_vt *vt, sy_store_kind kind,
                         size_t max_value_bytes)
{
    s->vt = vt;
    s->kind = kind;
    s->max_value_bytes = max_value_bytes;
    atomic_init(&s->ops, 0);
    atomic_init(&s->failures, 0);
}

void sy_store_free(sy_store *s)
{
    if (s != NULL)
        s->vt->destroy(s);
}

sy_store_kind sy_store_kind_of(const sy_store *s)
{
    return s->kind;
}

bool sy_store_healthy(const sy_store *s)
{
    return s->vt->healthy(s);
}

void sy_store_stats_get(sy_store *s, sy_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    s->vt->stats(s, out);
    out->healthy = s->vt->healthy(s);
    out->ops = atomic_load(&s->ops);
    out->failures = atomic_load(&s->failures);
}

/* ---- validation and dispatch ---------------------------------------------------------------- */

static sy_err done(sy_store *s, sy_err rc)
{
    atomic_fetch_add_explicit(&s->ops, 1, memory_order_relaxed);
    if (rc == SY_ETIMEOUT || rc == SY_EUNAVAIL || rc == SY_EINTERNAL)
        atomic_fetch_add_explicit(&s->failures, 1, memory_order_relaxed);
    return rc;
}

static sy_err check_str(const char *k, size_t max)
{
    if (k == NULL || k[0] == '\0')
        return SY_EINVAL;
    return strnlen(k, max + 1) > max ? SY_ETOOBIG : SY_OK;
}

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        sy_err rc_ = (expr);                                                                       \
        if (rc_ != SY_OK)                                                                          \
            return done(s, rc_);                                                                   \
    } while (0)

#define REQUIRE(cond) CHECK((cond) ? SY_OK : SY_EINVAL)

static sy_err check_value(const sy_store *s, const void *v, size_t len)
{
    if (v == NULL && len != 0)
        return SY_EINVAL;
    return len > s->max_value_bytes ? SY_ETOOBIG : SY_OK;
}

static bool id_ok(const char *id)
{
    sy_sid x;
    return id != NULL && strlen(id) < SY_STREAM_ID_MAX && sy_sid_parse(id, 0, &x);
}

sy_err sy_store_get(sy_store *s, const char *key, sy_buf *out)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(out != NULL);
    return done(s, s->vt->get(s, key, out));
}

sy_err sy_store_set(sy_store *s, const char *key, const void *val, size_t len, int64_t ttl_ms,
                    unsigned flags, bool *stored)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    CHECK(check_value(s, val, len));
    REQUIRE(ttl_ms >= 0 && (flags == 0 || flags == SY_STORE_NX || flags == SY_STORE_XX));
    return done(s, s->vt->set(s, key, val, len, ttl_ms, flags, stored));
}

sy_err sy_store_del(sy_store *s, const char *key, bool *existed)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    return done(s, s->vt->del(s, key, existed));
}

sy_err sy_store_exists(sy_store *s, const char *key, bool *exists)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(exists != NULL);
    return done(s, s->vt->exists(s, key, exists));
}

sy_err sy_store_expire(sy_store *s, const char *key, int64_t ttl_ms, bool *existed)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(ttl_ms > 0);
    return done(s, s->vt->expire(s, key, ttl_ms, existed));
}

sy_err sy_store_ttl(sy_store *s, const char *key, int64_t *ttl_ms)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(ttl_ms != NULL);
    return done(s, s->vt->ttl(s, key, ttl_ms));
}

sy_err sy_store_hincrby(sy_store *s, const char *key, const char *field, int64_t by,
                        int64_t *result)
{
    sy_store_incr op = {.key = key, .field = field, .by = by};
    sy_err rc = sy_store_hincrby_many(s, &op, 1, NULL, 0, NULL);

    if (rc == SY_OK && result != NULL)
        *result = op.result;
    return rc;
}

sy_err sy_store_hincrby_many(sy_store *s, sy_store_incr *ops, size_t n, const char *once_key,
                             int64_t once_ttl_ms, bool *applied)
{
    REQUIRE(ops != NULL && n >= 1 && n <= SY_STORE_BATCH_MAX);
    for (size_t i = 0; i < n; i++) {
        CHECK(check_str(ops[i].key, SY_STORE_KEY_MAX));
        CHECK(check_str(ops[i].field, SY_STORE_FIELD_MAX));
        REQUIRE(ops[i].ttl_ms >= 0);
    }
    if (once_key != NULL) {
        CHECK(check_str(once_key, SY_STORE_KEY_MAX));
        REQUIRE(once_ttl_ms > 0);
    }
    return done(s, s->vt->hincrby_many(s, ops, n, once_key, once_ttl_ms, applied));
}

sy_err sy_store_hgetall(sy_store *s, const char *key, sy_store_kvs *out)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(out != NULL);
    return done(s, s->vt->hgetall(s, key, out));
}

sy_err sy_store_hset(sy_store *s, const char *key, const char *field, const void *value,
                     size_t len, unsigned flags, bool *stored)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    CHECK(check_str(field, SY_STORE_FIELD_MAX));
    CHECK(check_value(s, value, len));
    REQUIRE(flags == 0 || flags == SY_STORE_NX);
    return done(s, s->vt->hset(s, key, field, value, len, flags, stored));
}

sy_err sy_store_hdel(sy_store *s, const char *key, const char *field, bool *existed)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    CHECK(check_str(field, SY_STORE_FIELD_MAX));
    return done(s, s->vt->hdel(s, key, field, existed));
}

#define GCRA_MAX_US (INT64_C(1) << 52) /* exact in Lua's doubles */

sy_err sy_store_gcra(sy_store *s, const char *key, const sy_store_gcra_req *req,
                     sy_store_gcra_res *res)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(req != NULL && res != NULL && req->rate >= 1 && req->burst >= 1 &&
            req->period_ms >= 1 && req->period_ms <= GCRA_MAX_US / 1000 &&
            req->rate <= req->period_ms * 1000);
    int64_t t = req->period_ms * 1000 / req->rate; /* emission interval, us */
    int64_t mag = req->cost < 0 ? -req->cost : req->cost;
    REQUIRE(req->cost > INT64_MIN && req->burst <= GCRA_MAX_US / t && mag <= GCRA_MAX_US / t);
    REQUIRE(req->force || mag <= req->burst);
    return done(s, s->vt->gcra(s, key, req, res));
}

sy_err sy_store_cas(sy_store *s, const char *key, const sy_store_cas_req *req, bool *swapped,
                    sy_buf *current)
{
    CHECK(check_str(key, SY_STORE_KEY_MAX));
    REQUIRE(req != NULL && swapped != NULL && req->ttl_ms >= 0);
    REQUIRE(req->expect_mode == SY_CAS_ANY || req->expect_mode == SY_CAS_ABSENT ||
            req->expect_mode == SY_CAS_EQUAL);
    if (req->expect_mode == SY_CAS_EQUAL)
        CHECK(check_value(s, req->expect, req->expect_len));
    if (!req->del)
        CHECK(check_value(s, req->value, req->value_len));
    return done(s, s->vt->cas(s, key, req, swapped, current));
}

static sy_err check_fields(const sy_store *s, const sy_store_field *f, size_t n)
{
    if (f == NULL || n < 1 || n > SY_STREAM_FIELDS_MAX)
        return SY_EINVAL;
    for (size_t i = 0; i < n; i++) {
        sy_err rc = check_str(f[i].name, SY_STORE_FIELD_MAX);
        if (rc == SY_OK)
            rc = check_value(s, f[i].value, f[i].value_len);
        if (rc != SY_OK)
            return rc;
    }
    return SY_OK;
}

sy_err sy_store_xadd(sy_store *s, const char *stream, const sy_store_field *fields, size_t n,
                     char id_out[SY_STREAM_ID_MAX])
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_fields(s, fields, n));
    return done(s, s->vt->xadd(s, stream, fields, n, id_out));
}

sy_err sy_store_xgroup_create(sy_store *s, const char *stream, const char *group,
                              const char *start_id, bool *created)
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_str(group, SY_STORE_NAME_MAX));
    REQUIRE(start_id != NULL && (strcmp(start_id, "$") == 0 || id_ok(start_id)));
    return done(s, s->vt->xgroup_create(s, stream, group, start_id, created));
}

sy_err sy_store_xreadgroup(sy_store *s, const char *stream, const char *group, const char *consumer,
                           const char *from, size_t count, long block_ms, sy_stream_entries *out)
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_str(group, SY_STORE_NAME_MAX));
    CHECK(check_str(consumer, SY_STORE_NAME_MAX));
    REQUIRE(from != NULL && (strcmp(from, ">") == 0 || id_ok(from)));
    REQUIRE(out != NULL && count >= 1 && count <= SY_STORE_COUNT_MAX && block_ms >= 0 &&
            block_ms <= SY_STORE_BLOCK_MAX_MS);
    return done(s, s->vt->xreadgroup(s, stream, group, consumer, from, count, block_ms, out));
}

sy_err sy_store_xack(sy_store *s, const char *stream, const char *group, const char *const *ids,
                     size_t n, bool del, size_t *acked)
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_str(group, SY_STORE_NAME_MAX));
    REQUIRE(ids != NULL && n >= 1 && n <= SY_STORE_COUNT_MAX);
    for (size_t i = 0; i < n; i++)
        REQUIRE(id_ok(ids[i]));
    return done(s, s->vt->xack(s, stream, group, ids, n, del, acked));
}

sy_err sy_store_xautoclaim(sy_store *s, const char *stream, const char *group, const char *consumer,
                           int64_t min_idle_ms, const char *start, size_t count,
                           sy_stream_entries *out, char next[SY_STREAM_ID_MAX])
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_str(group, SY_STORE_NAME_MAX));
    CHECK(check_str(consumer, SY_STORE_NAME_MAX));
    REQUIRE(min_idle_ms >= 0 && id_ok(start) && out != NULL && next != NULL && count >= 1 &&
            count <= SY_STORE_COUNT_MAX);
    return done(
        s, s->vt->xautoclaim(s, stream, group, consumer, min_idle_ms, start, count, out, next));
}

sy_err sy_store_xlen(sy_store *s, const char *stream, int64_t *len)
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    REQUIRE(len != NULL);
    return done(s, s->vt->xlen(s, stream, len));
}

sy_err sy_store_xpending(sy_store *s, const char *stream, const char *group, sy_stream_pending *out)
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_str(group, SY_STORE_NAME_MAX));
    REQUIRE(out != NULL);
    return done(s, s->vt->xpending(s, stream, group, out));
}

sy_err sy_store_xpending_list(sy_store *s, const char *stream, const char *group, const char *start,
                              const char *consumer, size_t count, sy_stream_pel_item *items,
                              size_t *n)
{
    CHECK(check_str(stream, SY_STORE_KEY_MAX));
    CHECK(check_str(group, SY_STORE_NAME_MAX));
    if (consumer != NULL)
        CHECK(check_str(consumer, SY_STORE_NAME_MAX));
    REQUIRE(start != NULL && (strcmp(start, "-") == 0 || id_ok(start)));
    REQUIRE(items != NULL && n != NULL && count >= 1 && count <= SY_STORE_COUNT_MAX);
    return done(s, s->vt->xpending_list(s, stream, group, start, consumer, count, items, n));
}
