/* cache: the prompt cache. Keys are a deny-list hash over a canonical serialization streamed
 * straight into SHA-256 (no copy of a possibly large body); entries are the normalised non-stream
 * answer plus a little metadata; a stream the relay sent is rebuilt into that same non-stream
 * answer by an accumulator that refuses anything inconsistent, because a wrong entry would be
 * served again and again. Only sy_cache_get/put and the embeddings lookup/put do I/O. This module's
 * own allocations use jansson's allocator, so the unit tests' failing allocator
 * (json_set_alloc_funcs) reaches them along with jansson's. */
#include "switchyard/cache.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/json_util.h"
#include "switchyard/provider_openai.h"

/* ---- allocation ------------------------------------------------------------------------------ */

static void *jalloc(size_t n)
{
    json_malloc_t m;
    json_get_alloc_funcs(&m, NULL);
    return m(n ? n : 1);
}

static void *jzalloc(size_t n)
{
    void *p = jalloc(n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

static void jfree(void *p)
{
    json_free_t f;
    if (p == NULL)
        return;
    json_get_alloc_funcs(NULL, &f);
    f(p);
}

static const char *ep_name(sy_endpoint ep)
{
    switch (ep) {
    case SY_EP_CHAT:
        return "chat";
    case SY_EP_COMPLETIONS:
        return "completions";
    case SY_EP_EMBEDDINGS:
        return "embeddings";
    }
    return "?";
}

static int ep_parse(const char *s, sy_endpoint *ep)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "chat") == 0)
        *ep = SY_EP_CHAT;
    else if (strcmp(s, "completions") == 0)
        *ep = SY_EP_COMPLETIONS;
    else if (strcmp(s, "embeddings") == 0)
        *ep = SY_EP_EMBEDDINGS;
    else
        return -1;
    return 0;
}

/* jansson leaves the error text empty when an allocation failed (lex_init, json_object() while
 * parsing); a malformed document always gets a message. */
static sy_err load_err(const json_error_t *jerr)
{
    return jerr->text[0] == '\0' || json_error_code(jerr) == json_error_out_of_memory ? SY_ENOMEM
                                                                                      : SY_EINVAL;
}

/* ---- key ------------------------------------------------------------------------------------- */

/* Top-level body fields that never change the answer. Keep this list short: anything not here is in
 * the key. */
static const char *const deny_all[] = {
    "stream",           "stream_options", "user", "safety_identifier", "metadata", "store",
    "prompt_cache_key", "service_tier",   NULL,
};

static bool denied(sy_endpoint ep, const char *key)
{
    for (size_t i = 0; deny_all[i] != NULL; i++)
        if (strcmp(key, deny_all[i]) == 0)
            return true;
    /* Entries hold float vectors; the client's encoding is applied on replay. */
    return ep == SY_EP_EMBEDDINGS && strcmp(key, "encoding_format") == 0;
}

#define HASH_DEPTH_MAX 256

typedef struct hasher {
    EVP_MD_CTX *ctx;
    sy_err err;
    size_t n;
    unsigned char buf[4096];
} hasher;

static void h_flush(hasher *h)
{
    if (h->n > 0 && h->err == SY_OK && EVP_DigestUpdate(h->ctx, h->buf, h->n) != 1)
        h->err = SY_EINTERNAL;
    h->n = 0;
}

static void h_put(hasher *h, const void *p, size_t n)
{
    const unsigned char *s = p;
    while (n > 0 && h->err == SY_OK) {
        if (h->n == sizeof(h->buf))
            h_flush(h);
        size_t k = sizeof(h->buf) - h->n;
        if (k > n)
            k = n;
        memcpy(h->buf + h->n, s, k);
        h->n += k;
        s += k;
        n -= k;
    }
}

static void h_puts(hasher *h, const char *s) { h_put(h, s, strlen(s)); }

/* A length-prefixed field: "<len>:<bytes>;" cannot be confused with its neighbours. */
static void h_field(hasher *h, const char *s)
{
    char pre[32];
    if (s == NULL)
        s = "";
    size_t n = strlen(s);
    int k = snprintf(pre, sizeof(pre), "%zu:", n);
    h_put(h, pre, (size_t)k);
    h_put(h, s, n);
    h_put(h, ";", 1);
}

/* A JSON string, escaped one fixed way. */
static void h_str(hasher *h, const char *s, size_t n)
{
    size_t run = 0;
    h_put(h, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '"' && c != '\\' && c >= 0x20)
            continue;
        h_put(h, s + run, i - run);
        run = i + 1;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            h_put(h, esc, 2);
        } else {
            (void)snprintf(esc, sizeof(esc), "\\u%04x", c);
            h_put(h, esc, 6);
        }
    }
    h_put(h, s + run, n - run);
    h_put(h, "\"", 1);
}

static void h_number(hasher *h, const json_t *j)
{
    char num[40];
    if (json_is_integer(j)) {
        (void)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    } else {
        double d = json_real_value(j);
        /* 1, 1.0 and 1e0 are the same JSON number: write integral reals as integers. 2^53 keeps the
         * conversion exact; -0.0 becomes 0. */
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            (void)snprintf(num, sizeof(num), "%lld", (long long)d);
        else
            (void)snprintf(num, sizeof(num), "%.17g", d);
    }
    h_puts(h, num);
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void h_json(hasher *h, const json_t *j, int depth, bool top, sy_endpoint ep)
{
    if (h->err != SY_OK)
        return;
    if (depth > HASH_DEPTH_MAX) {
        h->err = SY_EINVAL;
        return;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(j), k = 0;
        const char *stackkeys[32];
        const char **keys = n <= 32 ? stackkeys : jalloc(n * sizeof(*keys));
        const char *name;
        json_t *v;
        if (keys == NULL) {
            h->err = SY_ENOMEM;
            return;
        }
        json_object_foreach((json_t *)j, name, v)
        {
            if (!top || !denied(ep, name))
                keys[k++] = name;
        }
        qsort(keys, k, sizeof(*keys), key_cmp);
        h_put(h, "{", 1);
        for (size_t i = 0; i < k; i++) {
            if (i > 0)
                h_put(h, ",", 1);
            h_str(h, keys[i], strlen(keys[i]));
            h_put(h, ":", 1);
            h_json(h, json_object_get(j, keys[i]), depth + 1, false, ep);
        }
        h_put(h, "}", 1);
        if (keys != stackkeys)
            jfree(keys);
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        h_put(h, "[", 1);
        json_array_foreach(j, i, v)
        {
            if (i > 0)
                h_put(h, ",", 1);
            h_json(h, v, depth + 1, false, ep);
        }
        h_put(h, "]", 1);
        break;
    }
    case JSON_STRING:
        h_str(h, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        h_number(h, j);
        break;
    case JSON_TRUE:
        h_puts(h, "true");
        break;
    case JSON_FALSE:
        h_puts(h, "false");
        break;
    case JSON_NULL:
        h_puts(h, "null");
        break;
    }
}

sy_err sy_cache_key(const sy_cache_key_in *in, char key[SY_CACHE_KEY_SIZE])
{
    hasher *h = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    sy_err rc = SY_EINVAL;
    char ver[16];

    if (in == NULL || !json_is_object(in->body))
        goto out;
    rc = SY_ENOMEM;
    if ((h = jalloc(sizeof(*h))) == NULL)
        goto out;
    h->err = SY_OK;
    h->n = 0;
    if ((h->ctx = EVP_MD_CTX_new()) == NULL)
        goto out;
    rc = SY_EINTERNAL;
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        goto out;
    (void)snprintf(ver, sizeof(ver), "sy-cache-v%d", SY_CACHE_VERSION);
    h_field(h, ver);
    h_field(h, ep_name(in->ep));
    h_field(h, in->route);
    h_field(h, in->model);
    h_field(h, in->tenant);
    h_json(h, in->body, 0, true, in->ep);
    h_flush(h);
    if ((rc = h->err) != SY_OK)
        goto out;
    rc = SY_EINTERNAL;
    if (EVP_DigestFinal_ex(h->ctx, md, &mdlen) != 1 || mdlen != 32)
        goto out;
    memcpy(key, "{c:", 3);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < mdlen; i++) {
        key[3 + 2 * i] = hex[md[i] >> 4];
        key[3 + 2 * i + 1] = hex[md[i] & 15];
    }
    key[3 + 64] = '}';
    key[3 + 64 + 1] = '\0';
    rc = SY_OK;
out:
    if (h != NULL) {
        EVP_MD_CTX_free(h->ctx);
        jfree(h);
    }
    return rc;
}

/* ---- eligibility ----------------------------------------------------------------------------- */

static bool deterministic(sy_endpoint ep, const json_t *body)
{
    if (ep == SY_EP_EMBEDDINGS)
        return true;
    const json_t *t = json_object_get(body, "temperature");
    if (json_is_number(t) && json_number_value(t) == 0.0)
        return true;
    return json_is_number(json_object_get(body, "seed"));
}

/* Scans a Cache-Control value for the directives that matter here. */
static void cache_control(const char *v, bool *no_cache, bool *no_store)
{
    while (v != NULL && *v != '\0') {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *name = v;
        while (*v != '\0' && *v != ',' && *v != '=' && *v != ' ' && *v != '\t')
            v++;
        size_t nlen = (size_t)(v - name);
        while (*v == ' ' || *v == '\t')
            v++;
        const char *val = NULL;
        size_t vlen = 0;
        if (*v == '=') {
            v++;
            while (*v == ' ' || *v == '\t')
                v++;
            if (*v == '"') {
                val = ++v;
                while (*v != '\0' && *v != '"')
                    v++;
                vlen = (size_t)(v - val);
                if (*v == '"')
                    v++;
            } else {
                val = v;
                while (*v != '\0' && *v != ',' && *v != ' ' && *v != '\t')
                    v++;
                vlen = (size_t)(v - val);
            }
        }
        if (nlen == 8 && strncasecmp(name, "no-cache", 8) == 0)
            *no_cache = true;
        else if (nlen == 8 && strncasecmp(name, "no-store", 8) == 0)
            *no_store = true;
        else if (nlen == 7 && strncasecmp(name, "max-age", 7) == 0 && val != NULL) {
            /* max-age=0: the client accepts nothing stored, however fresh */
            bool zero = vlen > 0;
            for (size_t i = 0; i < vlen; i++)
                zero = zero && val[i] == '0';
            if (zero)
                *no_cache = true;
        }
        while (*v != '\0' && *v != ',')
            v++;
    }
}

sy_cache_plan sy_cache_eligible(sy_cache_mode mode, sy_endpoint ep, const json_t *body,
                                const char *cc)
{
    sy_cache_plan p = {false, false, "mode never"};
    bool no_cache = false, no_store = false;

    if (mode == SY_CACHE_NEVER)
        return p;
    if (mode == SY_CACHE_DETERMINISTIC && !deterministic(ep, body)) {
        p.reason = "not deterministic";
        return p;
    }
    cache_control(cc, &no_cache, &no_store);
    p.lookup = !no_cache;
    p.store = !no_store;
    p.reason = no_cache && no_store ? "no-cache, no-store"
               : no_cache           ? "no-cache"
               : no_store           ? "no-store"
                                    : "";
    return p;
}

const char *sy_cache_header(const sy_cache_plan *plan, bool hit)
{
    if (hit)
        return "hit";
    return plan != NULL && plan->lookup ? "miss" : "bypass";
}

const char *sy_cache_status_name(sy_cache_status st)
{
    switch (st) {
#define SY_CACHE_STATUS_STR(name, str)                                                             \
    case SY_CACHE_##name:                                                                          \
        return str;
        SY_CACHE_STATUS_MAP(SY_CACHE_STATUS_STR)
#undef SY_CACHE_STATUS_STR
    case SY_CACHE__COUNT:
        break;
    }
    return "unknown";
}

/* ---- entries --------------------------------------------------------------------------------- */

void sy_cache_entry_init(sy_cache_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->cost_micros = -1;
}

void sy_cache_entry_cleanup(sy_cache_entry *e)
{
    json_decref(e->answer);
    sy_cache_entry_init(e);
}

void sy_cache_entry_set(sy_cache_entry *e, sy_endpoint ep, json_t *answer, const char *deployment,
                        int64_t created_at_ms, int64_t cost_micros)
{
    json_t *old = e->answer; /* <answer> may be e->answer itself */
    e->ep = ep;
    e->answer = json_incref(answer);
    json_decref(old);
    (void)snprintf(e->deployment, sizeof(e->deployment), "%s", deployment ? deployment : "");
    e->created_at_ms = created_at_ms;
    e->cost_micros = cost_micros;
}

typedef struct dump_ctx {
    sy_buf *out;
    sy_err err;
} dump_ctx;

static int dump_cb(const char *buf, size_t size, void *data)
{
    dump_ctx *d = data;
    if (d->err == SY_OK)
        d->err = sy_buf_append(d->out, buf, size);
    return d->err == SY_OK ? 0 : -1;
}

sy_err sy_cache_entry_encode(const sy_cache_entry *e, const char *key, sy_buf *out)
{
    size_t old = out->len;
    json_t *doc = NULL;
    sy_err rc = SY_EINVAL;

    if (!json_is_object(e->answer) || key == NULL)
        goto out;
    rc = SY_ENOMEM;
    doc = json_pack("{s:i,s:s,s:s,s:I,s:s,s:I,s:O}", "v", SY_CACHE_VERSION, "k", key, "ep",
                    ep_name(e->ep), "created_at", (json_int_t)e->created_at_ms, "deployment",
                    e->deployment, "cost_micros", (json_int_t)e->cost_micros, "answer", e->answer);
    if (doc == NULL)
        goto out;
    dump_ctx d = {out, SY_OK};
    if (json_dump_callback(doc, dump_cb, &d, JSON_COMPACT) != 0)
        rc = d.err != SY_OK ? d.err : SY_ENOMEM;
    else
        rc = SY_OK;
out:
    if (rc != SY_OK && out->data != NULL) {
        out->len = old;
        out->data[old] = '\0';
    }
    json_decref(doc);
    return rc;
}

sy_err sy_cache_entry_decode(const char *data, size_t len, const char *key, sy_cache_entry *out)
{
    json_error_t jerr;
    json_t *doc = json_loadb(data, len, 0, &jerr);
    sy_err rc = SY_EINVAL;
    sy_endpoint ep;

    if (doc == NULL) {
        rc = load_err(&jerr);
        goto out;
    }
    json_t *v = json_object_get(doc, "v");
    json_t *k = json_object_get(doc, "k");
    json_t *answer = json_object_get(doc, "answer");
    json_t *dep = json_object_get(doc, "deployment");
    json_t *created = json_object_get(doc, "created_at");
    json_t *cost = json_object_get(doc, "cost_micros");
    if (!json_is_integer(v) || json_integer_value(v) != SY_CACHE_VERSION || !json_is_string(k) ||
        (key != NULL && strcmp(json_string_value(k), key) != 0) || !json_is_object(answer) ||
        ep_parse(json_string_value(json_object_get(doc, "ep")), &ep) != 0 ||
        !json_is_integer(created) || !json_is_integer(cost) ||
        (dep != NULL && !json_is_string(dep)))
        goto out;
    sy_cache_entry_set(out, ep, answer, json_string_value(dep), json_integer_value(created),
                       json_integer_value(cost));
    rc = SY_OK;
out:
    json_decref(doc);
    return rc;
}

/* ---- store operations ------------------------------------------------------------------------ */

static sy_cache_status from_store_err(sy_err rc)
{
    switch (rc) {
    case SY_OK:
        return SY_CACHE_STORED;
    case SY_ENOTFOUND:
        return SY_CACHE_MISS;
    case SY_ETOOBIG:
        return SY_CACHE_TOOBIG;
    case SY_ENOMEM:
        return SY_CACHE_NOMEM;
    case SY_EINVAL:
        return SY_CACHE_INVALID;
    default:
        return SY_CACHE_STORE_ERROR;
    }
}

sy_cache_status sy_cache_get(sy_store *s, const char *key, sy_endpoint ep, sy_cache_entry *out)
{
    sy_buf b;
    sy_cache_entry e;
    sy_cache_status st = SY_CACHE_INVALID;

    sy_buf_init(&b, SY_CACHE_ENTRY_MAX);
    sy_cache_entry_init(&e);
    if (s == NULL || key == NULL || key[0] == '\0')
        goto out;
    sy_err rc = sy_store_get(s, key, &b);
    if (rc != SY_OK) {
        /* an entry over the read cap cannot have been written by sy_cache_put */
        st = rc == SY_ETOOBIG ? SY_CACHE_CORRUPT : from_store_err(rc);
        if (st == SY_CACHE_INVALID)
            st = SY_CACHE_STORE_ERROR;
        goto out;
    }
    rc = sy_cache_entry_decode(b.data != NULL ? b.data : "", b.len, key, &e);
    if (rc != SY_OK) {
        st = rc == SY_ENOMEM ? SY_CACHE_NOMEM : SY_CACHE_CORRUPT;
        goto out;
    }
    if (e.ep != ep) {
        st = SY_CACHE_CORRUPT;
        goto out;
    }
    sy_cache_entry_cleanup(out);
    *out = e;
    sy_cache_entry_init(&e); /* moved */
    st = SY_CACHE_HIT;
out:
    sy_cache_entry_cleanup(&e);
    sy_buf_cleanup(&b);
    return st;
}

sy_cache_status sy_cache_put(sy_store *s, const char *key, const sy_cache_entry *e, long ttl_s,
                             size_t max_entry_bytes)
{
    sy_buf b;
    sy_cache_status st = SY_CACHE_INVALID;

    sy_buf_init(&b, max_entry_bytes > 0 && max_entry_bytes < SY_CACHE_ENTRY_MAX
                        ? max_entry_bytes
                        : SY_CACHE_ENTRY_MAX);
    if (s == NULL || key == NULL || key[0] == '\0' || e == NULL || ttl_s < 1)
        goto out;
    sy_err rc = sy_cache_entry_encode(e, key, &b);
    if (rc != SY_OK) {
        st = rc == SY_ETOOBIG  ? SY_CACHE_TOOBIG
             : rc == SY_ENOMEM ? SY_CACHE_NOMEM
                               : SY_CACHE_INVALID;
        goto out;
    }
    /* ten years is "forever" for a cache, and keeps ttl_ms far from overflow */
    int64_t ttl_ms = ttl_s > 315360000L ? 315360000000LL : (int64_t)ttl_s * 1000;
    rc = sy_store_set(s, key, b.data, b.len, ttl_ms, 0, NULL);
    st = from_store_err(rc);
    if (st == SY_CACHE_INVALID || st == SY_CACHE_MISS)
        st = SY_CACHE_STORE_ERROR;
out:
    sy_buf_cleanup(&b);
    return st;
}

/* ---- stream accumulator ---------------------------------------------------------------------- */

/* A growable string from jansson's allocator; the accumulator caps the total. */
typedef struct sb {
    char *p;
    size_t len, cap;
} sb;

static void sb_free(sb *s)
{
    jfree(s->p);
    memset(s, 0, sizeof(*s));
}

static sy_err sb_add(sy_cache_acc *a, sb *s, const char *p, size_t n)
{
    if (n > a->max_bytes - a->bytes)
        return SY_ETOOBIG;
    if (s->len + n + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap : 64;
        while (ncap < s->len + n + 1)
            ncap *= 2;
        char *np = jalloc(ncap);
        if (np == NULL)
            return SY_ENOMEM;
        if (s->len > 0)
            memcpy(np, s->p, s->len);
        jfree(s->p);
        s->p = np;
        s->cap = ncap;
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
    a->bytes += n;
    return SY_OK;
}

typedef struct acc_tool {
    bool seen;
    sb id, type, name, args;
} acc_tool;

struct sy_cache_acc_choice {
    bool finished;
    json_t *finish_reason;
    sb content; /* chat content, or completions text */
    bool has_content;
    sb refusal;
    sb reasoning;
    const char *reasoning_key; /* static: "reasoning_content" or "reasoning" */
    json_t *logprobs;          /* merged, or NULL */
    acc_tool *tools;
    size_t ntools; /* 1 + the highest index seen */
    size_t captools;
};

void sy_cache_acc_init(sy_cache_acc *a, sy_endpoint ep, size_t max_bytes)
{
    memset(a, 0, sizeof(*a));
    a->ep = ep;
    a->max_bytes = max_bytes > 0 ? max_bytes : SY_CACHE_ENTRY_MAX;
    a->err = ep == SY_EP_EMBEDDINGS ? SY_EINVAL : SY_OK;
}

static void choice_free(struct sy_cache_acc_choice *c)
{
    if (c == NULL)
        return;
    json_decref(c->finish_reason);
    json_decref(c->logprobs);
    sb_free(&c->content);
    sb_free(&c->refusal);
    sb_free(&c->reasoning);
    for (size_t i = 0; i < c->ntools; i++) {
        sb_free(&c->tools[i].id);
        sb_free(&c->tools[i].type);
        sb_free(&c->tools[i].name);
        sb_free(&c->tools[i].args);
    }
    jfree(c->tools);
    jfree(c);
}

void sy_cache_acc_cleanup(sy_cache_acc *a)
{
    for (size_t i = 0; i < a->nchoices; i++)
        choice_free(a->choices[i]);
    jfree(a->choices);
    json_decref(a->env);
    json_decref(a->usage);
    a->choices = NULL;
    a->nchoices = 0;
    a->env = NULL;
    a->usage = NULL;
}

static sy_err get_choice(sy_cache_acc *a, const json_t *idx, struct sy_cache_acc_choice **out)
{
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
        json_integer_value(idx) >= SY_CACHE_MAX_CHOICES)
        return SY_EINVAL;
    size_t i = (size_t)json_integer_value(idx);
    if (i >= a->nchoices) {
        struct sy_cache_acc_choice **nc = jzalloc((i + 1) * sizeof(struct sy_cache_acc_choice *));
        if (nc == NULL)
            return SY_ENOMEM;
        if (a->nchoices > 0)
            memcpy(nc, a->choices, a->nchoices * sizeof(struct sy_cache_acc_choice *));
        jfree(a->choices);
        a->choices = nc;
        a->nchoices = i + 1;
    }
    if (a->choices[i] == NULL && (a->choices[i] = jzalloc(sizeof(**a->choices))) == NULL)
        return SY_ENOMEM;
    *out = a->choices[i];
    return SY_OK;
}

static sy_err get_tool(struct sy_cache_acc_choice *c, const json_t *idx, acc_tool **out)
{
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
        json_integer_value(idx) >= SY_CACHE_MAX_TOOL_CALLS)
        return SY_EINVAL;
    size_t i = (size_t)json_integer_value(idx);
    if (i >= c->captools) {
        size_t ncap = c->captools ? c->captools * 2 : 4;
        while (ncap <= i)
            ncap *= 2;
        acc_tool *nt = jzalloc(ncap * sizeof(*nt));
        if (nt == NULL)
            return SY_ENOMEM;
        if (c->ntools > 0)
            memcpy(nt, c->tools, c->ntools * sizeof(*nt));
        jfree(c->tools);
        c->tools = nt;
        c->captools = ncap;
    }
    if (i >= c->ntools)
        c->ntools = i + 1;
    c->tools[i].seen = true;
    *out = &c->tools[i];
    return SY_OK;
}

/* An identity string (id, name, type): set once; a later different value is inconsistent. */
static sy_err set_ident(sy_cache_acc *a, sb *s, const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return SY_OK;
    if (!json_is_string(v))
        return SY_EINVAL;
    size_t n = json_string_length(v);
    if (s->len == 0)
        return n == 0 ? SY_OK : sb_add(a, s, json_string_value(v), n);
    if (n == 0)
        return SY_OK;
    return n == s->len && memcmp(s->p, json_string_value(v), n) == 0 ? SY_OK : SY_EINVAL;
}

/* Appends a string delta; null and absent are nothing. */
static sy_err add_text(sy_cache_acc *a, sb *s, const json_t *v, bool *seen)
{
    if (v == NULL || json_is_null(v))
        return SY_OK;
    if (!json_is_string(v))
        return SY_EINVAL;
    if (seen != NULL)
        *seen = true;
    return sb_add(a, s, json_string_value(v), json_string_length(v));
}

static sy_err merge_tool_calls(sy_cache_acc *a, struct sy_cache_acc_choice *c, const json_t *tcs)
{
    size_t i;
    json_t *tc;
    sy_err rc;

    if (tcs == NULL || json_is_null(tcs))
        return SY_OK;
    if (!json_is_array(tcs))
        return SY_EINVAL;
    json_array_foreach(tcs, i, tc)
    {
        acc_tool *t;
        if (!json_is_object(tc))
            return SY_EINVAL;
        if ((rc = get_tool(c, json_object_get(tc, "index"), &t)) != SY_OK)
            return rc;
        if ((rc = set_ident(a, &t->id, json_object_get(tc, "id"))) != SY_OK ||
            (rc = set_ident(a, &t->type, json_object_get(tc, "type"))) != SY_OK)
            return rc;
        const json_t *fn = json_object_get(tc, "function");
        if (fn == NULL || json_is_null(fn))
            continue;
        if (!json_is_object(fn))
            return SY_EINVAL;
        if ((rc = set_ident(a, &t->name, json_object_get(fn, "name"))) != SY_OK ||
            (rc = add_text(a, &t->args, json_object_get(fn, "arguments"), NULL)) != SY_OK)
            return rc;
    }
    return SY_OK;
}

/* logprobs: every array member is concatenated across chunks (chat: content/refusal; legacy
 * completions: tokens, token_logprobs, top_logprobs, text_offset). */
static sy_err merge_logprobs(sy_cache_acc *a, struct sy_cache_acc_choice *c, const json_t *lp)
{
    const char *k;
    json_t *v;

    if (lp == NULL || json_is_null(lp))
        return SY_OK;
    if (!json_is_object(lp))
        return SY_EINVAL;
    if (c->logprobs == NULL && (c->logprobs = json_object()) == NULL)
        return SY_ENOMEM;
    json_object_foreach((json_t *)lp, k, v)
    {
        if (json_is_null(v))
            continue;
        if (!json_is_array(v))
            return SY_EUNSUPPORTED;
        json_t *dst = json_object_get(c->logprobs, k);
        if (dst == NULL) {
            if ((dst = json_array()) == NULL || json_object_set_new(c->logprobs, k, dst) != 0)
                return SY_ENOMEM;
        }
        /* a rough size per token entry, so logprobs count against the cap too */
        size_t cost = json_array_size(v) * 64;
        if (cost > a->max_bytes - a->bytes)
            return SY_ETOOBIG;
        a->bytes += cost;
        if (json_array_extend(dst, v) != 0)
            return SY_ENOMEM;
    }
    return SY_OK;
}

static bool is_empty_delta_value(const json_t *v)
{
    return v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0);
}

static sy_err feed_chat_delta(sy_cache_acc *a, struct sy_cache_acc_choice *c, const json_t *d)
{
    const char *k;
    json_t *v;
    sy_err rc;

    if (d == NULL || json_is_null(d))
        return SY_OK;
    if (!json_is_object(d))
        return SY_EINVAL;
    json_object_foreach((json_t *)d, k, v)
    {
        if (c->finished && !(strcmp(k, "role") == 0 || is_empty_delta_value(v)))
            return SY_EINVAL; /* content after finish_reason */
        if (strcmp(k, "role") == 0) {
            if (!json_is_null(v) &&
                (!json_is_string(v) || strcmp(json_string_value(v), "assistant") != 0))
                return SY_EINVAL;
            rc = SY_OK;
        } else if (strcmp(k, "content") == 0) {
            rc = add_text(a, &c->content, v, &c->has_content);
        } else if (strcmp(k, "refusal") == 0) {
            rc = add_text(a, &c->refusal, v, NULL);
        } else if (strcmp(k, "reasoning_content") == 0 || strcmp(k, "reasoning") == 0) {
            const char *name = strcmp(k, "reasoning") == 0 ? "reasoning" : "reasoning_content";
            if (!json_is_null(v) && c->reasoning_key != NULL && c->reasoning_key != name)
                return SY_EUNSUPPORTED; /* both spellings in one stream */
            if (!json_is_null(v))
                c->reasoning_key = name;
            rc = add_text(a, &c->reasoning, v, NULL);
        } else if (strcmp(k, "tool_calls") == 0) {
            rc = merge_tool_calls(a, c, v);
        } else {
            rc = json_is_null(v) ? SY_OK : SY_EUNSUPPORTED;
        }
        if (rc != SY_OK)
            return rc;
    }
    return SY_OK;
}

/* Envelope strings must not change mid-stream. */
static sy_err env_same(sy_cache_acc *a, const json_t *chunk, const char *k, bool strict)
{
    const json_t *v = json_object_get(chunk, k);
    if (v == NULL || json_is_null(v))
        return SY_OK;
    if (!json_is_string(v))
        return SY_EINVAL;
    const json_t *have = json_object_get(a->env, k);
    if (have == NULL)
        return json_object_set(a->env, k, (json_t *)v) == 0 ? SY_OK : SY_ENOMEM;
    return !strict || json_equal(have, v) ? SY_OK : SY_EINVAL;
}

static sy_err feed(sy_cache_acc *a, const json_t *chunk)
{
    sy_err rc;

    if (a->done || !json_is_object(chunk))
        return SY_EINVAL;
    const json_t *choices = json_object_get(chunk, "choices");
    if (json_object_get(chunk, "error") != NULL && !json_is_array(choices))
        return SY_EUPSTREAM;
    const json_t *obj = json_object_get(chunk, "object");
    const char *want = a->ep == SY_EP_CHAT ? "chat.completion.chunk" : "text_completion";
    if (obj != NULL && (!json_is_string(obj) || strcmp(json_string_value(obj), want) != 0))
        return SY_EINVAL;
    if (a->env == NULL && (a->env = json_object()) == NULL)
        return SY_ENOMEM;
    if ((rc = env_same(a, chunk, "id", true)) != SY_OK ||
        (rc = env_same(a, chunk, "model", true)) != SY_OK ||
        (rc = env_same(a, chunk, "system_fingerprint", false)) != SY_OK ||
        (rc = env_same(a, chunk, "service_tier", false)) != SY_OK)
        return rc;
    const json_t *created = json_object_get(chunk, "created");
    if (json_is_integer(created) && json_object_get(a->env, "created") == NULL &&
        json_object_set(a->env, "created", (json_t *)created) != 0)
        return SY_ENOMEM;
    const json_t *usage = json_object_get(chunk, "usage");
    if (json_is_object(usage)) {
        json_t *u = json_deep_copy(usage);
        if (u == NULL)
            return SY_ENOMEM;
        json_decref(a->usage);
        a->usage = u;
    } else if (usage != NULL && !json_is_null(usage)) {
        return SY_EINVAL;
    }
    if (choices == NULL || json_is_null(choices))
        return SY_OK;
    if (!json_is_array(choices))
        return SY_EINVAL;
    size_t i;
    json_t *ch;
    json_array_foreach(choices, i, ch)
    {
        struct sy_cache_acc_choice *c;
        if (!json_is_object(ch))
            return SY_EINVAL;
        if ((rc = get_choice(a, json_object_get(ch, "index"), &c)) != SY_OK)
            return rc;
        if (a->ep == SY_EP_CHAT) {
            rc = feed_chat_delta(a, c, json_object_get(ch, "delta"));
        } else {
            const json_t *text = json_object_get(ch, "text");
            if (c->finished && !is_empty_delta_value(text))
                return SY_EINVAL;
            rc = add_text(a, &c->content, text, &c->has_content);
        }
        if (rc != SY_OK)
            return rc;
        const json_t *lp = json_object_get(ch, "logprobs");
        if (c->finished && !is_empty_delta_value(lp) &&
            !(json_is_object(lp) && json_object_size(lp) == 0))
            return SY_EINVAL;
        if ((rc = merge_logprobs(a, c, lp)) != SY_OK)
            return rc;
        const json_t *fr = json_object_get(ch, "finish_reason");
        if (fr != NULL && !json_is_null(fr)) {
            if (!json_is_string(fr) || c->finished)
                return SY_EINVAL;
            c->finished = true;
            c->finish_reason = json_incref((json_t *)fr);
        }
    }
    return SY_OK;
}

sy_err sy_cache_acc_feed(sy_cache_acc *a, const json_t *chunk)
{
    if (a->err == SY_OK)
        a->err = feed(a, chunk);
    return a->err;
}

sy_err sy_cache_acc_feed_data(sy_cache_acc *a, const char *data, size_t len)
{
    json_error_t jerr;

    if (a->err != SY_OK)
        return a->err;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        if (a->done)
            a->err = SY_EINVAL;
        a->done = true;
        return a->err;
    }
    json_t *chunk = json_loadb(data, len, 0, &jerr);
    if (chunk == NULL)
        a->err = load_err(&jerr);
    else
        a->err = feed(a, chunk);
    json_decref(chunk);
    return a->err;
}

/* The builder's bytes as a new JSON string (NULL on allocation failure). */
static json_t *sb_json(const sb *s) { return json_stringn(s->p != NULL ? s->p : "", s->len); }

static int set_new(json_t *o, const char *k, json_t *v)
{
    return v == NULL ? -1 : json_object_set_new(o, k, v);
}

static sy_err build_chat_message(struct sy_cache_acc_choice *c, json_t *choice)
{
    json_t *m = json_object();
    if (m == NULL || json_object_set_new(choice, "message", m) != 0)
        return SY_ENOMEM;
    if (set_new(m, "role", json_string("assistant")) != 0)
        return SY_ENOMEM;
    bool other = c->ntools > 0 || c->refusal.len > 0;
    if (set_new(m, "content", c->content.len > 0 || !other ? sb_json(&c->content) : json_null()) !=
            0 ||
        set_new(m, "refusal", c->refusal.len > 0 ? sb_json(&c->refusal) : json_null()) != 0)
        return SY_ENOMEM;
    if (c->reasoning_key != NULL && c->reasoning.len > 0 &&
        set_new(m, c->reasoning_key, sb_json(&c->reasoning)) != 0)
        return SY_ENOMEM;
    if (c->ntools == 0)
        return SY_OK;
    json_t *tcs = json_array();
    if (tcs == NULL || json_object_set_new(m, "tool_calls", tcs) != 0)
        return SY_ENOMEM;
    for (size_t j = 0; j < c->ntools; j++) {
        acc_tool *t = &c->tools[j];
        if (!t->seen || t->id.len == 0 || t->name.len == 0)
            return SY_EINVAL; /* a gap in the indexes, or a call never identified */
        json_t *tc =
            json_pack("{s:o,s:o,s:{s:o,s:o}}", "id", sb_json(&t->id), "type",
                      t->type.len > 0 ? sb_json(&t->type) : json_string("function"), "function",
                      "name", sb_json(&t->name), "arguments", sb_json(&t->args));
        if (tc == NULL || json_array_append_new(tcs, tc) != 0)
            return SY_ENOMEM;
    }
    return SY_OK;
}

static sy_err finish(sy_cache_acc *a, bool completed, const json_t *usage, json_t **answer)
{
    sy_err rc = SY_EINVAL;
    json_t *ans = NULL, *choices = NULL;
    char msg[128];

    if (!completed || a->nchoices == 0)
        goto out;
    for (size_t i = 0; i < a->nchoices; i++)
        if (a->choices[i] == NULL || !a->choices[i]->finished)
            goto out;
    rc = SY_ENOMEM;
    if ((ans = json_object()) == NULL || (choices = json_array()) == NULL)
        goto out;
    const char *kv[] = {"id", "created", "model", "system_fingerprint", "service_tier"};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        json_t *v = a->env != NULL ? json_object_get(a->env, kv[i]) : NULL;
        if (v != NULL && json_object_set(ans, kv[i], v) != 0)
            goto out;
    }
    if (json_object_set_new(
            ans, "object",
            json_string(a->ep == SY_EP_CHAT ? "chat.completion" : "text_completion")) != 0 ||
        json_object_set(ans, "choices", choices) != 0)
        goto out;
    for (size_t i = 0; i < a->nchoices; i++) {
        struct sy_cache_acc_choice *c = a->choices[i];
        json_t *ch =
            json_pack("{s:I,s:O,s:O}", "index", (json_int_t)i, "finish_reason", c->finish_reason,
                      "logprobs", c->logprobs != NULL ? c->logprobs : json_null());
        if (ch == NULL || json_array_append_new(choices, ch) != 0)
            goto out;
        if (a->ep == SY_EP_CHAT) {
            if ((rc = build_chat_message(c, ch)) != SY_OK)
                goto out;
            rc = SY_ENOMEM;
        } else if (set_new(ch, "text", sb_json(&c->content)) != 0) {
            goto out;
        }
    }
    if (!json_is_object(usage))
        usage = a->usage;
    if (json_is_object(usage) && set_new(ans, "usage", json_deep_copy(usage)) != 0)
        goto out;
    rc = sy_openai_normalize(a->ep, ans, false, msg, sizeof(msg));
    if (rc != SY_OK) {
        rc = SY_EINVAL;
        goto out;
    }
    *answer = ans;
    ans = NULL;
out:
    json_decref(choices);
    json_decref(ans);
    return rc;
}

sy_err sy_cache_acc_finish(sy_cache_acc *a, bool completed, const json_t *usage, json_t **answer)
{
    if (a->err != SY_OK)
        return a->err;
    sy_err rc = finish(a, completed, usage, answer);
    /* the accumulator is spent either way: a second finish is refused */
    a->err = rc != SY_OK ? rc : SY_EINVAL;
    return rc;
}

/* ---- replay ---------------------------------------------------------------------------------- */

static int embeddings_to_b64(json_t *ans)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(ans, "data"), i, d)
    {
        json_t *v = json_object_get(d, "embedding");
        if (json_is_array(v)) {
            json_t *b = sy_json_floats_to_b64(v);
            if (b == NULL || json_object_set_new(d, "embedding", b) != 0)
                return -1;
        }
    }
    return 0;
}

json_t *sy_cache_replay_answer(const sy_cache_entry *e, const sy_cache_replay *o)
{
    json_t *ans = json_deep_copy(e->answer);
    if (ans == NULL)
        return NULL;
    if (e->ep == SY_EP_EMBEDDINGS) {
        if (o != NULL && o->embed_b64 && embeddings_to_b64(ans) != 0)
            goto fail;
        return ans;
    }
    if (o != NULL && o->req_id != NULL) {
        char id[96];
        (void)snprintf(id, sizeof(id), "%s-%s", e->ep == SY_EP_CHAT ? "chatcmpl" : "cmpl",
                       o->req_id);
        if (json_object_set_new(ans, "id", json_string(id)) != 0)
            goto fail;
    }
    if (o != NULL && o->now_s > 0 &&
        json_object_set_new(ans, "created", json_integer((json_int_t)o->now_s)) != 0)
        goto fail;
    return ans;
fail:
    json_decref(ans);
    return NULL;
}

sy_err sy_cache_replay_json(const sy_cache_entry *e, const sy_cache_replay *o, char **body,
                            size_t *len)
{
    if (!json_is_object(e->answer))
        return SY_EINVAL;
    json_t *ans = sy_cache_replay_answer(e, o);
    if (ans == NULL)
        return SY_ENOMEM;
    *body = sy_json_dump(ans, len);
    json_decref(ans);
    return *body != NULL ? SY_OK : SY_ENOMEM;
}

sy_err sy_cache_replay_sse(const sy_cache_entry *e, const sy_cache_replay *o, sy_buf *out)
{
    if (e->ep == SY_EP_EMBEDDINGS || !json_is_object(e->answer))
        return SY_EINVAL;
    json_t *ans = sy_cache_replay_answer(e, o);
    if (ans == NULL)
        return SY_ENOMEM;
    sy_err rc = sy_openai_to_sse(e->ep, ans, o != NULL && o->client_usage, out);
    json_decref(ans);
    return rc;
}

/* ---- embeddings per input -------------------------------------------------------------------- */

static bool all_of(const json_t *arr, int (*pred)(const json_t *))
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!pred(v))
            return false;
    }
    return true;
}

static int is_int(const json_t *v) { return json_is_integer(v); }

static int is_num(const json_t *v) { return json_is_number(v); }

static int is_str(const json_t *v) { return json_is_string(v); }

static int is_token_array(const json_t *v)
{
    return json_is_array(v) && json_array_size(v) > 0 && all_of(v, is_int);
}

void sy_cache_embed_cleanup(sy_cache_embed *e)
{
    if (e->vecs != NULL)
        for (size_t i = 0; i < e->n; i++)
            json_decref(e->vecs[i]);
    jfree(e->keys);
    jfree(e->vecs);
    jfree(e->fresh);
    jfree(e->first);
    json_decref(e->inputs);
    json_decref(e->model);
    memset(e, 0, sizeof(*e));
}

sy_err sy_cache_embed_init(sy_cache_embed *e, const sy_cache_key_in *in)
{
    json_t *b = NULL;
    sy_err rc = SY_EINVAL;

    memset(e, 0, sizeof(*e));
    if (in == NULL || !json_is_object(in->body) || in->ep != SY_EP_EMBEDDINGS)
        goto out;
    const json_t *input = json_object_get(in->body, "input");
    if (json_is_string(input) || is_token_array(input)) {
        rc = SY_ENOMEM;
        if ((e->inputs = json_pack("[O]", input)) == NULL)
            goto out;
        e->single = true;
    } else if (json_is_array(input) && json_array_size(input) > 0 &&
               (all_of(input, is_str) || all_of(input, is_token_array))) {
        rc = SY_ETOOBIG;
        if (json_array_size(input) > SY_CACHE_EMBED_MAX_INPUTS)
            goto out;
        rc = SY_ENOMEM;
        if ((e->inputs = json_copy((json_t *)input)) == NULL)
            goto out;
    } else {
        goto out;
    }
    size_t n = json_array_size(e->inputs);
    rc = SY_ENOMEM;
    e->keys = jalloc(n * sizeof(*e->keys));
    e->vecs = jzalloc(n * sizeof(json_t *));
    e->fresh = jzalloc(n * sizeof(*e->fresh));
    e->first = jzalloc(n * sizeof(*e->first));
    if (e->keys == NULL || e->vecs == NULL || e->fresh == NULL || e->first == NULL)
        goto out;
    e->n = n;
    if ((b = json_copy((json_t *)in->body)) == NULL)
        goto out;
    sy_cache_key_in kin = *in;
    kin.body = b;
    for (size_t i = 0; i < n; i++) {
        if (json_object_set(b, "input", json_array_get(e->inputs, i)) != 0)
            goto out;
        if ((rc = sy_cache_key(&kin, e->keys[i])) != SY_OK)
            goto out;
        rc = SY_ENOMEM;
        e->first[i] = i;
        for (size_t j = 0; j < i; j++) {
            if (e->first[j] == j && strcmp(e->keys[j], e->keys[i]) == 0) {
                e->first[i] = j;
                break;
            }
        }
        if (e->first[i] == i)
            e->nmiss++;
    }
    rc = SY_OK;
out:
    json_decref(b);
    if (rc != SY_OK)
        sy_cache_embed_cleanup(e);
    return rc;
}

/* The vector of a one-datum embeddings entry (borrowed), or NULL. */
static json_t *entry_vector(const sy_cache_entry *ent)
{
    json_t *d = json_array_get(json_object_get(ent->answer, "data"), 0);
    json_t *v = json_object_get(d, "embedding");
    return json_is_array(v) && json_array_size(v) > 0 && all_of(v, is_num) ? v : NULL;
}

static void count_missing(sy_cache_embed *e)
{
    e->nmiss = 0;
    e->nhit = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (e->vecs[i] == NULL && e->vecs[e->first[i]] != NULL)
            e->vecs[i] = json_incref(e->vecs[e->first[i]]);
        if (e->vecs[i] == NULL && e->first[i] == i)
            e->nmiss++;
        if (e->vecs[i] != NULL && !e->fresh[e->first[i]])
            e->nhit++;
    }
}

sy_cache_status sy_cache_embed_lookup(sy_store *s, sy_cache_embed *e)
{
    sy_cache_status worst = SY_CACHE_HIT;
    sy_cache_entry ent;

    sy_cache_entry_init(&ent);
    for (size_t i = 0; i < e->n && worst == SY_CACHE_HIT; i++) {
        if (e->first[i] != i || e->vecs[i] != NULL)
            continue;
        sy_cache_status st = sy_cache_get(s, e->keys[i], SY_EP_EMBEDDINGS, &ent);
        if (st == SY_CACHE_HIT) {
            json_t *v = entry_vector(&ent);
            if (v != NULL) {
                e->vecs[i] = json_incref(v);
                json_t *m = json_object_get(ent.answer, "model");
                if (e->model == NULL && json_is_string(m))
                    e->model = json_incref(m);
            }
        } else if (st == SY_CACHE_STORE_ERROR || st == SY_CACHE_NOMEM) {
            worst = st;
        }
        sy_cache_entry_cleanup(&ent);
    }
    count_missing(e);
    if (worst != SY_CACHE_HIT)
        return worst;
    return e->nmiss == 0 ? SY_CACHE_HIT : SY_CACHE_MISS;
}

sy_err sy_cache_embed_miss_body(const sy_cache_embed *e, const json_t *body, json_t **out)
{
    json_t *b = NULL, *arr = NULL;
    sy_err rc = SY_EINVAL;

    if (e->n == 0 || e->nmiss == 0 || !json_is_object(body))
        goto out;
    rc = SY_ENOMEM;
    if ((b = json_copy((json_t *)body)) == NULL)
        goto out;
    if (!e->single) {
        if ((arr = json_array()) == NULL)
            goto out;
        for (size_t i = 0; i < e->n; i++)
            if (e->first[i] == i && e->vecs[i] == NULL &&
                json_array_append(arr, json_array_get(e->inputs, i)) != 0)
                goto out;
        if (json_object_set(b, "input", arr) != 0)
            goto out;
    }
    *out = b;
    b = NULL;
    rc = SY_OK;
out:
    json_decref(arr);
    json_decref(b);
    return rc;
}

sy_err sy_cache_embed_fill(sy_cache_embed *e, const json_t *resp)
{
    json_t **got = NULL;
    size_t *which = NULL;
    sy_err rc = SY_EUPSTREAM;
    const json_t *data = json_object_get(resp, "data");
    size_t m = 0;

    if (e->nmiss == 0 || !json_is_array(data) || json_array_size(data) != e->nmiss)
        goto out;
    rc = SY_ENOMEM;
    got = jzalloc(e->nmiss * sizeof(json_t *));
    which = jalloc(e->nmiss * sizeof(*which));
    if (got == NULL || which == NULL)
        goto out;
    for (size_t i = 0; i < e->n; i++)
        if (e->first[i] == i && e->vecs[i] == NULL)
            which[m++] = i;
    size_t k;
    json_t *d;
    json_array_foreach(data, k, d)
    {
        const json_t *idx = json_object_get(d, "index");
        const json_t *v = json_object_get(d, "embedding");
        rc = SY_EUPSTREAM;
        if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
            (size_t)json_integer_value(idx) >= m || got[json_integer_value(idx)] != NULL)
            goto out;
        json_t *vec = NULL;
        if (json_is_array(v) && json_array_size(v) > 0 && all_of(v, is_num))
            vec = json_incref((json_t *)v);
        else if (json_is_string(v))
            vec = sy_json_b64_to_floats(json_string_value(v), json_string_length(v));
        if (vec == NULL)
            goto out;
        got[json_integer_value(idx)] = vec;
    }
    for (size_t j = 0; j < m; j++) {
        e->vecs[which[j]] = got[j];
        e->fresh[which[j]] = true;
        got[j] = NULL;
    }
    count_missing(e);
    rc = SY_OK;
out:
    if (got != NULL)
        for (size_t j = 0; j < m; j++)
            json_decref(got[j]);
    jfree(got);
    jfree(which);
    return rc;
}

sy_cache_status sy_cache_embed_put(sy_store *s, const sy_cache_embed *e, const char *model,
                                   const char *deployment, int64_t created_at_ms, long ttl_s,
                                   size_t max_entry_bytes, size_t *stored)
{
    sy_cache_status st = SY_CACHE_STORED;
    size_t n = 0;

    for (size_t i = 0; i < e->n && st == SY_CACHE_STORED; i++) {
        if (e->first[i] != i || !e->fresh[i] || e->vecs[i] == NULL)
            continue;
        sy_cache_entry ent;
        sy_cache_entry_init(&ent);
        json_t *ans = json_pack("{s:s,s:[{s:s,s:i,s:O}],s:s,s:{s:i,s:i}}", "object", "list", "data",
                                "object", "embedding", "index", 0, "embedding", e->vecs[i], "model",
                                model != NULL ? model : "unknown", "usage", "prompt_tokens", 0,
                                "total_tokens", 0);
        if (ans == NULL) {
            st = SY_CACHE_NOMEM;
            break;
        }
        sy_cache_entry_set(&ent, SY_EP_EMBEDDINGS, ans, deployment, created_at_ms, -1);
        json_decref(ans);
        st = sy_cache_put(s, e->keys[i], &ent, ttl_s, max_entry_bytes);
        sy_cache_entry_cleanup(&ent);
        if (st == SY_CACHE_STORED)
            n++;
    }
    if (stored != NULL)
        *stored = n;
    return st;
}

sy_err sy_cache_embed_answer(const sy_cache_embed *e, const json_t *resp, bool b64, json_t **out)
{
    json_t *ans = NULL, *data = NULL;
    sy_err rc = SY_EINVAL;

    if (e->n == 0)
        goto out;
    for (size_t i = 0; i < e->n; i++)
        if (e->vecs[i] == NULL)
            goto out;
    rc = SY_ENOMEM;
    const json_t *model = json_object_get(resp, "model");
    if (!json_is_string(model))
        model = e->model;
    const json_t *usage = json_object_get(resp, "usage");
    ans = json_pack("{s:s,s:[],s:O?}", "object", "list", "data", "model", model);
    if (ans == NULL)
        goto out;
    if (!json_is_string(model) && json_object_set_new(ans, "model", json_string("unknown")) != 0)
        goto out;
    if (set_new(ans, "usage",
                json_is_object(usage)
                    ? json_deep_copy(usage)
                    : json_pack("{s:i,s:i}", "prompt_tokens", 0, "total_tokens", 0)) != 0)
        goto out;
    data = json_object_get(ans, "data");
    for (size_t i = 0; i < e->n; i++) {
        json_t *v = b64 ? sy_json_floats_to_b64(e->vecs[i]) : json_incref(e->vecs[i]);
        json_t *d = v != NULL ? json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                                          (json_int_t)i, "embedding", v)
                              : NULL;
        if (d == NULL || json_array_append_new(data, d) != 0)
            goto out;
    }
    *out = ans;
    ans = NULL;
    rc = SY_OK;
out:
    json_decref(ans);
    return rc;
}
