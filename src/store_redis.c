/* store_redis: the store on Redis through hiredis 0.14's synchronous API, used as a bounded pool.
 *
 * Why a pool and not hiredis async on an event loop: the callers (worker threads, the curl thread)
 * need an answer before they go on (a cache lookup decides whether to call the upstream), and
 * hiredis 0.14's async API has no per-command timeouts, so every deadline would be ours to build
 * on top of a loop owned by another thread. The pool gives the same guarantee with less machinery:
 *   - each connection is switched to non-blocking after connect; a call appends its commands,
 *     sends them with send(MSG_NOSIGNAL) and reads replies with poll() against ONE deadline
 *     (timeout_ms from entry, pool wait included), so a slow or stopped Redis costs at most
 *     timeout_ms and never raises SIGPIPE;
 *   - a call never connects: the monitor thread (re)makes connections with exponential backoff
 *     and jitter, and PINGs an idle connection every second so the health state is current;
 *   - the first connection failure of a healthy "epoch" marks the store down (logged once), drops
 *     every idle connection (a restart has killed them all) and wakes the monitor; while down
 *     there is no connection, so calls fail with SY_EUNAVAIL at once. The first successful
 *     connect marks it up again (logged once). Failures of connections from an older epoch
 *     are stale and change nothing, so a restart logs one down and one up, not one per socket.
 * Built-in scripts run with EVALSHA and fall back to EVAL on NOSCRIPT (after a Redis restart or
 * SCRIPT FLUSH). Replies are converted into the store's own structs before the connection is
 * released; no hiredis type leaves this file. */
#include "switchyard/store.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "store_int.h"
#include "switchyard/log.h"

#define BACKOFF_BASE_MS 50
#define BACKOFF_MAX_MS 2000
#define PING_EVERY_MS 1000
#define FULLKEY_MAX (SY_STORE_PREFIX_MAX + SY_STORE_KEY_MAX + 1)
/* Redis expires BLOCK timeouts from its event loop, which may sleep until the next serverCron
 * tick (hz 10 = 100 ms): a blocked read's reply can come that much after block_ms. */
#define BLOCK_GRACE_MS 150

/* ---- built-in scripts ----------------------------------------------------------------------- */

/* KEYS[1]; ARGV: emission interval us, tolerance us, cost, force. Redis's clock: all instances
 * agree. Times in microseconds fit Lua's doubles exactly (store.c bounds them to 2^52). */
static const char GCRA_LUA[] = "local t = redis.call('TIME')\n"
                               "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
                               "local T = tonumber(ARGV[1])\n"
                               "local tau = tonumber(ARGV[2])\n"
                               "local cost = tonumber(ARGV[3])\n"
                               "local force = ARGV[4] == '1'\n"
                               "local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now\n"
                               "if tat < now then tat = now end\n"
                               "local new = tat + cost * T\n"
                               "local remaining, retry, reset\n"
                               "local allowed = force or (new - now <= tau)\n"
                               "if allowed then\n"
                               "  if new < now then new = now end\n"
                               "  if new > now then\n"
                               "    redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',\n"
                               "               math.ceil((new - now) / 1000))\n"
                               "  else\n"
                               "    redis.call('DEL', KEYS[1])\n"
                               "  end\n"
                               "  remaining = math.floor((tau - (new - now)) / T)\n"
                               "  retry = 0\n"
                               "  reset = math.ceil((new - now) / 1000)\n"
                               "else\n"
                               "  remaining = math.floor((tau - (tat - now)) / T)\n"
                               "  retry = math.ceil((new - now - tau) / 1000)\n"
                               "  reset = math.ceil((tat - now) / 1000)\n"
                               "end\n"
                               "if remaining < 0 then remaining = 0 end\n"
                               "return {allowed and 1 or 0, remaining, retry, reset}\n";

/* KEYS[1]; ARGV: mode (any|absent|equal), expected, del (0|1), value, ttl ms. */
static const char CAS_LUA[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "local ok = true\n"
    "if ARGV[1] == 'absent' then ok = (cur == false)\n"
    "elseif ARGV[1] == 'equal' then ok = (cur ~= false and cur == ARGV[2]) end\n"
    "if not ok then\n"
    "  if cur == false then return {0} end\n"
    "  return {0, cur}\n"
    "end\n"
    "if ARGV[3] == '1' then redis.call('DEL', KEYS[1])\n"
    "elseif tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])\n"
    "else redis.call('SET', KEYS[1], ARGV[4]) end\n"
    "return {1}\n";

/* KEYS[1] once-key, KEYS[2..] hashes; ARGV[1] once TTL, then (field, by, ttl) per hash. */
static const char ONCE_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return false end\n"
    "local res = {}\n"
    "for i = 2, #KEYS do\n"
    "  local a = (i - 2) * 3 + 2\n"
    "  res[#res + 1] = redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1])\n"
    "  if tonumber(ARGV[a + 2]) > 0 then redis.call('PEXPIRE', KEYS[i], ARGV[a + 2]) end\n"
    "end\n"
    "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\n"
    "return res\n";

typedef struct script {
    const char *src;
    char sha[41];
} script;

enum { SC_GCRA, SC_CAS, SC_ONCE, SC__N };

/* ---- the pool ------------------------------------------------------------------------------- */

typedef struct rconn {
    redisContext *c; /* NULL: not connected */
    bool busy;       /* a call or the monitor holds it */
    uint64_t epoch;
} rconn;

typedef struct rstore {
    sy_store base;
    char *url, *host, *unix_path, *user, *password, *prefix;
    size_t prefix_len;
    int port, db, pool;
    long timeout_ms;
    script scripts[SC__N];

    pthread_mutex_t mu;
    pthread_cond_t cv;  /* a connection was released or the state changed (callers) */
    pthread_cond_t mcv; /* the monitor has work or must stop */
    rconn *conns;
    int connected;
    int blocking, max_blocking; /* connections held by blocking stream reads */
    uint64_t epoch;
    atomic_bool healthy;
    bool was_up; /* for logging: the last logged state */
    bool logged; /* a state was logged at all */
    bool ever_up;
    bool stop;
    uint64_t reconnects;
    pthread_t monitor;
    bool monitor_started;
    unsigned seed;
} rstore;

#define R(s) ((rstore *)(void *)(s))

static void timespec_at(struct timespec *ts, int64_t mono_ms)
{
    ts->tv_sec = mono_ms / 1000;
    ts->tv_nsec = (mono_ms % 1000) * 1000000L;
}

/* Called with the lock held. */
static void state_up(rstore *r)
{
    atomic_store(&r->healthy, true);
    if (!r->logged || !r->was_up)
        sy_log(SY_LOG_INFO, NULL, "store: redis %s is up", r->url);
    r->was_up = true;
    r->logged = true;
    pthread_cond_broadcast(&r->cv);
}

/* Called with the lock held: the current epoch ends, every idle connection goes (they share the
 * fate of the one that failed), callers fail fast until the monitor reconnects. */
static void state_down(rstore *r, const char *why)
{
    atomic_store(&r->healthy, false);
    r->epoch++;
    for (int i = 0; i < r->pool; i++) {
        rconn *k = &r->conns[i];
        if (k->c != NULL && !k->busy) {
            redisFree(k->c);
            k->c = NULL;
            r->connected--;
        }
    }
    if (!r->logged || r->was_up)
        sy_log(SY_LOG_WARN, NULL, "store: redis %s is down (%s); running degraded", r->url, why);
    r->was_up = false;
    r->logged = true;
    pthread_cond_broadcast(&r->cv);
    pthread_cond_signal(&r->mcv);
}

/* ---- one call: commands out, replies in, one deadline --------------------------------------- */

typedef struct call {
    rstore *r;
    rconn *slot; /* NULL while setting up a new connection */
    redisContext *ctx;
    int64_t deadline; /* monotonic ms */
    int pending;      /* replies not read yet */
    sy_err fail;      /* connection-level failure: the connection must go */
    char why[128];
    bool held_block; /* counted in r->blocking */
} call;

static sy_err call_fail(call *c, sy_err rc, const char *why)
{
    if (c->fail == SY_OK) {
        c->fail = rc;
        (void)snprintf(c->why, sizeof(c->why), "%s", why);
    }
    return c->fail;
}

/* Waits for <events> on the socket until the deadline. */
static sy_err wait_fd(call *c, short events)
{
    for (;;) {
        int64_t left = c->deadline - sy_store__mono_ms();
        struct pollfd p = {.fd = c->ctx->fd, .events = events};
        int n;

        if (left <= 0)
            return call_fail(c, SY_ETIMEOUT, "timeout");
        n = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (n > 0)
            return SY_OK;
        if (n < 0 && errno != EINTR)
            return call_fail(c, SY_EUNAVAIL, strerror(errno));
    }
}

static sy_err call_cmd(call *c, int argc, const char **argv, const size_t *lens)
{
    if (c->fail != SY_OK)
        return c->fail;
    if (redisAppendCommandArgv(c->ctx, argc, argv, lens) != REDIS_OK)
        return call_fail(c, SY_ENOMEM, "out of memory");
    c->pending++;
    return SY_OK;
}

/* hiredis writes with write(2), which raises SIGPIPE on a reset socket; send the output buffer
 * ourselves with MSG_NOSIGNAL. */
static sy_err call_flush(call *c)
{
    while (c->fail == SY_OK && c->ctx->obuf != NULL && sdslen(c->ctx->obuf) > 0) {
        ssize_t n = send(c->ctx->fd, c->ctx->obuf, sdslen(c->ctx->obuf), MSG_NOSIGNAL);
        if (n > 0)
            sdsrange(c->ctx->obuf, (int)n, -1); /* n <= sdslen, an int in hiredis 0.14 */
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            (void)wait_fd(c, POLLOUT);
        else if (n < 0 && errno == EINTR)
            continue;
        else
            return call_fail(c, SY_EUNAVAIL, n < 0 ? strerror(errno) : "send failed");
    }
    return c->fail;
}

/* The next reply (new, freeReplyObject) or a failure. */
static sy_err call_reply(call *c, redisReply **out)
{
    *out = NULL;
    if (call_flush(c) != SY_OK)
        return c->fail;
    for (;;) {
        void *rep = NULL;
        if (redisGetReplyFromReader(c->ctx, &rep) != REDIS_OK)
            return call_fail(c, SY_EINTERNAL, "protocol error");
        if (rep != NULL) {
            c->pending--;
            *out = rep;
            return SY_OK;
        }
        if (wait_fd(c, POLLIN) != SY_OK)
            return c->fail;
        if (redisBufferRead(c->ctx) != REDIS_OK)
            return call_fail(c, SY_EUNAVAIL, c->ctx->errstr[0] ? c->ctx->errstr : "read failed");
    }
}

/* Takes a pooled connection (or fails fast while down). <extra_ms> extends the deadline for a
 * blocking read. */
static sy_err call_begin(rstore *r, call *c, long extra_ms)
{
    struct timespec ts;
    sy_err rc = SY_OK;

    memset(c, 0, sizeof(*c));
    c->r = r;
    c->deadline = sy_store__mono_ms() + r->timeout_ms + extra_ms;
    timespec_at(&ts, c->deadline);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->connected == 0) {
            rc = SY_EUNAVAIL;
            break;
        }
        for (int i = 0; i < r->pool; i++) {
            rconn *k = &r->conns[i];
            if (k->c != NULL && !k->busy) {
                k->busy = true;
                c->slot = k;
                c->ctx = k->c;
                goto out;
            }
        }
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) {
            rc = SY_ETIMEOUT;
            break;
        }
    }
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Returns the connection; one with a failure or unread replies is dropped. */
static void call_end(call *c)
{
    rstore *r = c->r;
    rconn *k = c->slot;

    if (k == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    if (c->held_block)
        r->blocking--;
    if (c->fail != SY_OK || c->pending != 0) {
        bool current = k->epoch == r->epoch;
        redisFree(k->c);
        k->c = NULL;
        r->connected--;
        k->busy = false;
        /* out of memory says nothing about Redis; a stale epoch was already accounted */
        if (current &&
            (c->fail == SY_ETIMEOUT || c->fail == SY_EUNAVAIL || c->fail == SY_EINTERNAL))
            state_down(r, c->why);
        pthread_cond_signal(&r->mcv);
    }
    k->busy = false;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    c->slot = NULL;
}

/* ---- connecting ----------------------------------------------------------------------------- */

static void set_nonblocking(redisContext *ctx)
{
    int fl = fcntl(ctx->fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(ctx->fd, F_SETFL, fl | O_NONBLOCK);
    ctx->flags &= ~REDIS_BLOCK; /* redisBufferRead treats EAGAIN as "try later" */
}

static bool setup_cmd(call *c, int argc, const char **argv, char *why, size_t whylen)
{
    redisReply *rep = NULL;
    size_t lens[4];

    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (call_cmd(c, argc, argv, lens) != SY_OK || call_reply(c, &rep) != SY_OK || rep == NULL) {
        (void)snprintf(why, whylen, "%s: %s", argv[0], c->why);
        return false;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Redis's AUTH errors never echo the password */
        (void)snprintf(why, whylen, "%s: %.*s", argv[0], (int)(rep->len > 100 ? 100 : rep->len),
                       rep->str);
        freeReplyObject(rep);
        return false;
    }
    freeReplyObject(rep);
    return true;
}

/* A ready connection (authenticated, database selected, answered PING) or NULL with <why>. */
static redisContext *connect_one(rstore *r, char *why, size_t whylen)
{
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    redisContext *ctx;
    call c;
    char db[16];

    ctx = r->unix_path ? redisConnectUnixWithTimeout(r->unix_path, tv)
                       : redisConnectWithTimeout(r->host, r->port, tv);
    if (ctx == NULL) {
        (void)snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (ctx->err) {
        (void)snprintf(why, whylen, "%s", ctx->errstr);
        redisFree(ctx);
        return NULL;
    }
    if (r->unix_path == NULL)
        (void)redisEnableKeepAlive(ctx);
    set_nonblocking(ctx);
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.ctx = ctx;
    c.deadline = sy_store__mono_ms() + r->timeout_ms;
    if (r->password != NULL) {
        const char *a[3] = {"AUTH", r->user ? r->user : r->password, r->password};
        if (!setup_cmd(&c, r->user ? 3 : 2, a, why, whylen))
            goto fail;
    }
    if (r->db != 0) {
        (void)snprintf(db, sizeof(db), "%d", r->db);
        const char *a[2] = {"SELECT", db};
        if (!setup_cmd(&c, 2, a, why, whylen))
            goto fail;
    }
    const char *ping[1] = {"PING"};
    if (!setup_cmd(&c, 1, ping, why, whylen))
        goto fail;
    return ctx;
fail:
    redisFree(ctx);
    return NULL;
}

static int64_t jitter(rstore *r, int64_t ms)
{
    /* +-25% so instances restarted together do not reconnect in lockstep */
    int64_t span = ms / 2 + 1;
    return ms - ms / 4 + (int64_t)(rand_r(&r->seed) % (unsigned)span);
}

static void ping_idle(rstore *r)
{
    rconn *k = NULL;
    call c;
    redisReply *rep = NULL;
    const char *argv[1] = {"PING"};
    size_t len = 4;

    for (int i = 0; i < r->pool && k == NULL; i++)
        if (r->conns[i].c != NULL && !r->conns[i].busy)
            k = &r->conns[i];
    if (k == NULL)
        return; /* every connection is busy: traffic is the health check */
    k->busy = true;
    pthread_mutex_unlock(&r->mu);
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.slot = k;
    c.ctx = k->c;
    c.deadline = sy_store__mono_ms() + r->timeout_ms;
    if (call_cmd(&c, 1, argv, &len) == SY_OK && call_reply(&c, &rep) == SY_OK)
        freeReplyObject(rep);
    call_end(&c);
    pthread_mutex_lock(&r->mu);
}

static void *monitor_main(void *arg)
{
    rstore *r = arg;
    int64_t backoff = 0, next_try = 0, next_ping = sy_store__mono_ms() + PING_EVERY_MS;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        int64_t now = sy_store__mono_ms();
        rconn *slot = NULL;
        struct timespec ts;

        for (int i = 0; i < r->pool && slot == NULL; i++)
            if (r->conns[i].c == NULL && !r->conns[i].busy)
                slot = &r->conns[i];
        if (slot != NULL && now >= next_try) {
            char why[160];
            redisContext *ctx;

            slot->busy = true;
            pthread_mutex_unlock(&r->mu);
            ctx = connect_one(r, why, sizeof(why));
            pthread_mutex_lock(&r->mu);
            slot->busy = false;
            if (ctx != NULL) {
                slot->c = ctx;
                slot->epoch = r->epoch;
                r->connected++;
                if (r->ever_up)
                    r->reconnects++;
                r->ever_up = true;
                state_up(r);
                backoff = 0;
                next_try = 0;
            } else {
                if (atomic_load(&r->healthy) || !r->logged)
                    state_down(r, why);
                backoff = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2)
                                  : BACKOFF_BASE_MS;
                next_try = sy_store__mono_ms() + jitter(r, backoff);
            }
            continue;
        }
        if (slot == NULL && now >= next_ping) {
            ping_idle(r);
            next_ping = sy_store__mono_ms() + PING_EVERY_MS;
            continue;
        }
        timespec_at(&ts, slot != NULL ? next_try : next_ping);
        (void)pthread_cond_timedwait(&r->mcv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static size_t full_key(const rstore *r, const char *key, char out[FULLKEY_MAX])
{
    size_t n = strlen(key);
    memcpy(out, r->prefix, r->prefix_len);
    memcpy(out + r->prefix_len, key, n + 1);
    return r->prefix_len + n;
}

static bool has(const redisReply *rep, const char *what)
{
    return rep->str != NULL && memmem(rep->str, rep->len, what, strlen(what)) != NULL;
}

static sy_err map_error(const redisReply *rep)
{
    if (has(rep, "WRONGTYPE") || has(rep, "not an integer") || has(rep, "overflow"))
        return SY_EINVAL;
    if (has(rep, "NOGROUP"))
        return SY_ENOTFOUND;
    if (has(rep, "OOM"))
        return SY_ENOMEM;
    sy_log(SY_LOG_DEBUG, NULL, "store: redis error reply: %.*s",
           (int)(rep->len > 200 ? 200 : rep->len), rep->str);
    return SY_EINTERNAL;
}

/* Sends one command and reads its reply: the common case. *rep is new (freeReplyObject). */
static sy_err run1(rstore *r, long extra_ms, int argc, const char **argv, const size_t *lens,
                   redisReply **rep)
{
    call c;
    sy_err rc = call_begin(r, &c, extra_ms);

    if (rc != SY_OK)
        return rc;
    if ((rc = call_cmd(&c, argc, argv, lens)) == SY_OK)
        rc = call_reply(&c, rep);
    call_end(&c);
    return rc;
}

static void fill_lens(int argc, const char **argv, size_t *lens)
{
    for (int i = 0; i < argc; i++)
        if (lens[i] == 0 && argv[i] != NULL)
            lens[i] = strlen(argv[i]);
}

static sy_err kv_from(sy_store_kv *kv, const redisReply *name, const redisReply *val)
{
    if (name->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
        return SY_EINTERNAL;
    kv->name = sy_store__memdup0(name->str, name->len);
    kv->value = sy_store__memdup0(val->str, val->len);
    kv->name_len = name->len;
    kv->value_len = val->len;
    return kv->name && kv->value ? SY_OK : SY_ENOMEM;
}

/* A flat [name, value, ...] array into <out> (new). */
static sy_err kvs_from(const redisReply *arr, size_t cap, sy_store_kvs *out)
{
    size_t total = 0;

    out->items = NULL;
    out->n = 0;
    if (arr->type != REDIS_REPLY_ARRAY || arr->elements % 2 != 0)
        return SY_EINTERNAL;
    if (arr->elements == 0)
        return SY_OK;
    out->items = sy_store__calloc(arr->elements / 2, sizeof(*out->items));
    if (out->items == NULL)
        return SY_ENOMEM;
    for (size_t i = 0; i + 1 < arr->elements; i += 2) {
        total += arr->element[i]->len + arr->element[i + 1]->len;
        if (total > cap)
            return SY_ETOOBIG;
        out->n++;
        sy_err rc = kv_from(&out->items[i / 2], arr->element[i], arr->element[i + 1]);
        if (rc != SY_OK)
            return rc;
    }
    return SY_OK;
}

static sy_err copy_id(char dst[SY_STREAM_ID_MAX], const redisReply *rep)
{
    if (rep->type != REDIS_REPLY_STRING || rep->len >= SY_STREAM_ID_MAX)
        return SY_EINTERNAL;
    memcpy(dst, rep->str, rep->len);
    dst[rep->len] = '\0';
    return SY_OK;
}

/* [[id, [f, v, ...] | nil], ...] (nil entries from Redis 6.2's XAUTOCLAIM are skipped) into
 * <out> (new). */
static sy_err entries_from(const redisReply *arr, size_t cap, sy_stream_entries *out)
{
    out->items = NULL;
    out->n = 0;
    if (arr->type != REDIS_REPLY_ARRAY)
        return SY_EINTERNAL;
    if (arr->elements == 0)
        return SY_OK;
    out->items = sy_store__calloc(arr->elements, sizeof(*out->items));
    if (out->items == NULL)
        return SY_ENOMEM;
    for (size_t i = 0; i < arr->elements; i++) {
        const redisReply *e = arr->element[i];
        sy_stream_entry *d = &out->items[out->n];
        sy_err rc;

        if (e->type == REDIS_REPLY_NIL)
            continue;
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
            return SY_EINTERNAL;
        memset(d, 0, sizeof(*d));
        out->n++;
        if ((rc = copy_id(d->id, e->element[0])) != SY_OK)
            return rc;
        if (e->element[1]->type == REDIS_REPLY_NIL) {
            d->deleted = true;
            continue;
        }
        if ((rc = kvs_from(e->element[1], cap, &d->fields)) != SY_OK)
            return rc;
    }
    return SY_OK;
}

static void fmt_i64(char *buf, size_t n, int64_t v)
{
    (void)snprintf(buf, n, "%" PRId64, v);
}

/* ---- strings -------------------------------------------------------------------------------- */

static sy_err r_get(sy_store *s, const char *key, sy_buf *out)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    const char *argv[2] = {"GET", k};
    size_t lens[2] = {3, full_key(r, key, k)};
    redisReply *rep = NULL;
    sy_err rc = run1(r, 0, 2, argv, lens, &rep);

    if (rc != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_NIL)
        rc = SY_ENOTFOUND;
    else if (rep->type == REDIS_REPLY_STRING)
        rc = sy_buf_append(out, rep->str, rep->len);
    else
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    freeReplyObject(rep);
    return rc;
}

static sy_err r_set(sy_store *s, const char *key, const void *val, size_t len, int64_t ttl_ms,
                    unsigned flags, bool *stored)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX], ttl[24];
    const char *argv[6] = {"SET", k, val ? val : ""};
    size_t lens[6] = {3, full_key(r, key, k), len};
    int argc = 3;
    redisReply *rep = NULL;
    sy_err rc;

    if (ttl_ms > 0) {
        fmt_i64(ttl, sizeof(ttl), ttl_ms);
        argv[argc] = "PX";
        lens[argc++] = 2;
        argv[argc] = ttl;
        lens[argc++] = strlen(ttl);
    }
    if (flags) {
        argv[argc] = flags == SY_STORE_NX ? "NX" : "XX";
        lens[argc++] = 2;
    }
    if ((rc = run1(r, 0, argc, argv, lens, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_STATUS || rep->type == REDIS_REPLY_NIL) {
        if (stored != NULL)
            *stored = rep->type == REDIS_REPLY_STATUS;
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    return rc;
}

/* A command on one key answering an integer. */
static sy_err key_int(rstore *r, const char *cmd, const char *key, const char *arg, int64_t *out)
{
    char k[FULLKEY_MAX];
    const char *argv[3] = {cmd, k, arg};
    size_t lens[3] = {strlen(cmd), full_key(r, key, k), arg ? strlen(arg) : 0};
    redisReply *rep = NULL;
    sy_err rc = run1(r, 0, arg ? 3 : 2, argv, lens, &rep);

    if (rc != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_INTEGER)
        *out = rep->integer;
    else
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    freeReplyObject(rep);
    return rc;
}

static sy_err r_del(sy_store *s, const char *key, bool *existed)
{
    int64_t n = 0;
    sy_err rc = key_int(R(s), "DEL", key, NULL, &n);
    if (rc == SY_OK && existed != NULL)
        *existed = n > 0;
    return rc;
}

static sy_err r_exists(sy_store *s, const char *key, bool *exists)
{
    int64_t n = 0;
    sy_err rc = key_int(R(s), "EXISTS", key, NULL, &n);
    if (rc == SY_OK)
        *exists = n > 0;
    return rc;
}

static sy_err r_expire(sy_store *s, const char *key, int64_t ttl_ms, bool *existed)
{
    char ttl[24];
    int64_t n = 0;
    sy_err rc;

    fmt_i64(ttl, sizeof(ttl), ttl_ms);
    rc = key_int(R(s), "PEXPIRE", key, ttl, &n);
    if (rc == SY_OK && existed != NULL)
        *existed = n > 0;
    return rc;
}

static sy_err r_ttl(sy_store *s, const char *key, int64_t *ttl_ms)
{
    int64_t n = 0;
    sy_err rc = key_int(R(s), "PTTL", key, NULL, &n);
    if (rc != SY_OK)
        return rc;
    if (n == -2)
        return SY_ENOTFOUND;
    *ttl_ms = n;
    return SY_OK;
}

/* ---- scripts -------------------------------------------------------------------------------- */

/* EVALSHA <script> with <nkeys> keys and <nargs> args (argv from index 0); EVAL on NOSCRIPT,
 * within the same deadline. *rep is new. */
static sy_err run_script(rstore *r, int which, const char **keys, const size_t *klens, int nkeys,
                         const char **args, const size_t *alens, int nargs, redisReply **rep)
{
    int argc = 3 + nkeys + nargs;
    const char **argv = sy_store__calloc((size_t)argc, sizeof(*argv));
    size_t *lens = sy_store__calloc((size_t)argc, sizeof(*lens));
    char nk[16];
    call c;
    sy_err rc = SY_ENOMEM;

    if (argv == NULL || lens == NULL)
        goto out;
    (void)snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = r->scripts[which].sha;
    lens[1] = 40;
    argv[2] = nk;
    lens[2] = strlen(nk);
    for (int i = 0; i < nkeys; i++) {
        argv[3 + i] = keys[i];
        lens[3 + i] = klens[i];
    }
    for (int i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = args[i];
        lens[3 + nkeys + i] = alens[i];
    }
    if ((rc = call_begin(r, &c, 0)) != SY_OK)
        goto out;
    if ((rc = call_cmd(&c, argc, argv, lens)) == SY_OK)
        rc = call_reply(&c, rep);
    if (rc == SY_OK && (*rep)->type == REDIS_REPLY_ERROR && has(*rep, "NOSCRIPT")) {
        freeReplyObject(*rep);
        *rep = NULL;
        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = r->scripts[which].src;
        lens[1] = strlen(argv[1]);
        if ((rc = call_cmd(&c, argc, argv, lens)) == SY_OK)
            rc = call_reply(&c, rep);
    }
    call_end(&c);
out:
    sy_store__free(argv);
    sy_store__free(lens);
    return rc;
}

static sy_err r_gcra(sy_store *s, const char *key, const sy_store_gcra_req *req,
                     sy_store_gcra_res *res)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX], a0[24], a1[24], a2[24];
    int64_t t = req->period_ms * 1000 / req->rate;
    const char *keys[1] = {k};
    size_t klens[1] = {full_key(r, key, k)};
    const char *args[4] = {a0, a1, a2, req->force ? "1" : "0"};
    size_t alens[4];
    redisReply *rep = NULL;
    sy_err rc;

    fmt_i64(a0, sizeof(a0), t);
    fmt_i64(a1, sizeof(a1), t * req->burst);
    fmt_i64(a2, sizeof(a2), req->cost);
    for (int i = 0; i < 4; i++)
        alens[i] = strlen(args[i]);
    if ((rc = run_script(r, SC_GCRA, keys, klens, 1, args, alens, 4, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4) {
        for (int i = 0; i < 4; i++)
            if (rep->element[i]->type != REDIS_REPLY_INTEGER)
                rc = SY_EINTERNAL;
        if (rc == SY_OK) {
            res->allowed = rep->element[0]->integer == 1;
            res->remaining = rep->element[1]->integer;
            res->retry_after_ms = rep->element[2]->integer;
            res->reset_ms = rep->element[3]->integer;
        }
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    return rc;
}

static sy_err r_cas(sy_store *s, const char *key, const sy_store_cas_req *req, bool *swapped,
                    sy_buf *current)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX], ttl[24];
    const char *keys[1] = {k};
    size_t klens[1] = {full_key(r, key, k)};
    const char *mode = req->expect_mode == SY_CAS_ABSENT  ? "absent"
                       : req->expect_mode == SY_CAS_EQUAL ? "equal"
                                                          : "any";
    const char *args[5] = {mode, req->expect ? req->expect : "", req->del ? "1" : "0",
                           req->value ? req->value : "", ttl};
    size_t alens[5] = {strlen(mode), req->expect_mode == SY_CAS_EQUAL ? req->expect_len : 0, 1,
                       req->del ? 0 : req->value_len, 0};
    redisReply *rep = NULL;
    sy_err rc;

    fmt_i64(ttl, sizeof(ttl), req->ttl_ms);
    alens[4] = strlen(ttl);
    if ((rc = run_script(r, SC_CAS, keys, klens, 1, args, alens, 5, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER) {
        if (rep->elements == 2 && current != NULL && rep->element[1]->type == REDIS_REPLY_STRING)
            rc = sy_buf_append(current, rep->element[1]->str, rep->element[1]->len);
        if (rc == SY_OK)
            *swapped = rep->element[0]->integer == 1;
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    return rc;
}

/* ---- hashes --------------------------------------------------------------------------------- */

static sy_err incr_once(rstore *r, sy_store_incr *ops, size_t n, const char *once_key,
                        int64_t once_ttl_ms, bool *applied)
{
    char *kbuf = sy_store__malloc((n + 1) * FULLKEY_MAX);
    char *nbuf = sy_store__malloc((2 * n + 1) * 24);
    const char **keys = sy_store__calloc(n + 1, sizeof(*keys));
    size_t *klens = sy_store__calloc(n + 1, sizeof(*klens));
    const char **args = sy_store__calloc(3 * n + 1, sizeof(*args));
    size_t *alens = sy_store__calloc(3 * n + 1, sizeof(*alens));
    redisReply *rep = NULL;
    sy_err rc = SY_ENOMEM;

    if (!kbuf || !nbuf || !keys || !klens || !args || !alens)
        goto out;
    for (size_t i = 0; i <= n; i++) {
        keys[i] = kbuf + i * FULLKEY_MAX;
        klens[i] = full_key(r, i == 0 ? once_key : ops[i - 1].key, kbuf + i * FULLKEY_MAX);
    }
    args[0] = nbuf;
    fmt_i64(nbuf, 24, once_ttl_ms);
    for (size_t i = 0; i < n; i++) {
        char *by = nbuf + (1 + 2 * i) * 24, *ttl = nbuf + (2 + 2 * i) * 24;
        fmt_i64(by, 24, ops[i].by);
        fmt_i64(ttl, 24, ops[i].ttl_ms);
        args[1 + 3 * i] = ops[i].field;
        args[2 + 3 * i] = by;
        args[3 + 3 * i] = ttl;
    }
    for (size_t i = 0; i < 3 * n + 1; i++)
        alens[i] = strlen(args[i]);
    rc = run_script(r, SC_ONCE, keys, klens, (int)n + 1, args, alens, (int)(3 * n + 1), &rep);
    if (rc != SY_OK)
        goto out;
    if (rep->type == REDIS_REPLY_NIL) {
        if (applied != NULL)
            *applied = false;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == n) {
        for (size_t i = 0; i < n; i++)
            if (rep->element[i]->type != REDIS_REPLY_INTEGER)
                rc = SY_EINTERNAL;
        for (size_t i = 0; i < n && rc == SY_OK; i++)
            ops[i].result = rep->element[i]->integer;
        if (rc == SY_OK && applied != NULL)
            *applied = true;
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
out:
    if (rep != NULL)
        freeReplyObject(rep);
    sy_store__free(kbuf);
    sy_store__free(nbuf);
    sy_store__free(keys);
    sy_store__free(klens);
    sy_store__free(args);
    sy_store__free(alens);
    return rc;
}

static sy_err r_hincrby_many(sy_store *s, sy_store_incr *ops, size_t n, const char *once_key,
                             int64_t once_ttl_ms, bool *applied)
{
    rstore *r = R(s);
    call c;
    redisReply *rep = NULL;
    sy_err rc;
    int64_t *res;

    if (once_key != NULL)
        return incr_once(r, ops, n, once_key, once_ttl_ms, applied);
    res = sy_store__calloc(n, sizeof(*res));
    if (res == NULL)
        return SY_ENOMEM;
    if ((rc = call_begin(r, &c, 0)) != SY_OK) {
        sy_store__free(res);
        return rc;
    }
    /* MULTI/EXEC: one round trip, applied as a unit by Redis's single thread */
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t l5 = 5, l4 = 4;
    size_t queued = 0;
    (void)call_cmd(&c, 1, multi, &l5);
    for (size_t i = 0; i < n; i++) {
        char k[FULLKEY_MAX], by[24], ttl[24];
        const char *argv[4] = {"HINCRBY", k, ops[i].field, by};
        size_t lens[4] = {7, full_key(r, ops[i].key, k), strlen(ops[i].field), 0};

        fmt_i64(by, sizeof(by), ops[i].by);
        lens[3] = strlen(by);
        (void)call_cmd(&c, 4, argv, lens);
        queued++;
        if (ops[i].ttl_ms > 0) {
            const char *ev[3] = {"PEXPIRE", k, ttl};
            size_t el[3] = {7, lens[1], 0};
            fmt_i64(ttl, sizeof(ttl), ops[i].ttl_ms);
            el[2] = strlen(ttl);
            (void)call_cmd(&c, 3, ev, el);
            queued++;
        }
    }
    (void)call_cmd(&c, 1, exec, &l4);
    /* MULTI's +OK and one +QUEUED per command, then EXEC's array */
    for (size_t i = 0; i < queued + 1 && c.fail == SY_OK; i++) {
        if (call_reply(&c, &rep) != SY_OK)
            break;
        if (rep->type == REDIS_REPLY_ERROR && rc == SY_OK)
            rc = map_error(rep);
        freeReplyObject(rep);
        rep = NULL;
    }
    if (c.fail == SY_OK && call_reply(&c, &rep) == SY_OK) {
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == queued) {
            size_t j = 0;
            for (size_t i = 0; i < n; i++) {
                const redisReply *e = rep->element[j];
                if (e->type == REDIS_REPLY_INTEGER)
                    res[i] = e->integer;
                else if (rc == SY_OK)
                    rc = e->type == REDIS_REPLY_ERROR ? map_error(e) : SY_EINTERNAL;
                j += ops[i].ttl_ms > 0 ? 2 : 1;
            }
        } else if (rc == SY_OK) {
            rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
        }
        freeReplyObject(rep);
    }
    if (c.fail != SY_OK)
        rc = c.fail;
    call_end(&c);
    if (rc == SY_OK) {
        for (size_t i = 0; i < n; i++)
            ops[i].result = res[i];
        if (applied != NULL)
            *applied = true;
    }
    sy_store__free(res);
    return rc;
}

static sy_err r_hgetall(sy_store *s, const char *key, sy_store_kvs *out)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    const char *argv[2] = {"HGETALL", k};
    size_t lens[2] = {7, full_key(r, key, k)};
    redisReply *rep = NULL;
    sy_store_kvs kv = {NULL, 0};
    sy_err rc = run1(r, 0, 2, argv, lens, &rep);

    if (rc != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_ARRAY)
        rc = kvs_from(rep, s->max_value_bytes * 16, &kv);
    else
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    freeReplyObject(rep);
    if (rc == SY_OK) {
        sy_store_kvs_cleanup(out);
        *out = kv;
    } else {
        sy_store_kvs_cleanup(&kv);
    }
    return rc;
}

static sy_err r_hset(sy_store *s, const char *key, const char *field, const void *value,
                     size_t len, unsigned flags, bool *stored)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    const char *cmd = flags == SY_STORE_NX ? "HSETNX" : "HSET";
    const char *argv[4] = {cmd, k, field, value != NULL ? value : ""};
    size_t lens[4] = {strlen(cmd), full_key(r, key, k), strlen(field), len};
    redisReply *rep = NULL;
    sy_err rc = run1(r, 0, 4, argv, lens, &rep);

    if (rc != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_INTEGER) {
        /* HSETNX: 1 = set; HSET: 1 = new field, 0 = updated (written either way) */
        if (stored != NULL)
            *stored = flags == SY_STORE_NX ? rep->integer == 1 : true;
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    return rc;
}

static sy_err r_hdel(sy_store *s, const char *key, const char *field, bool *existed)
{
    int64_t n = 0;
    sy_err rc = key_int(R(s), "HDEL", key, field, &n);
    if (rc == SY_OK && existed != NULL)
        *existed = n > 0;
    return rc;
}

/* ---- streams -------------------------------------------------------------------------------- */

static sy_err r_xadd(sy_store *s, const char *stream, const sy_store_field *fields, size_t n,
                     char id_out[SY_STREAM_ID_MAX])
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    const char *argv[3 + 2 * SY_STREAM_FIELDS_MAX] = {"XADD", k, "*"};
    size_t lens[3 + 2 * SY_STREAM_FIELDS_MAX] = {4, full_key(r, stream, k), 1};
    redisReply *rep = NULL;
    sy_err rc;

    for (size_t i = 0; i < n; i++) {
        argv[3 + 2 * i] = fields[i].name;
        lens[3 + 2 * i] = strlen(fields[i].name);
        argv[4 + 2 * i] = fields[i].value ? fields[i].value : "";
        lens[4 + 2 * i] = fields[i].value_len;
    }
    if ((rc = run1(r, 0, (int)(3 + 2 * n), argv, lens, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_STRING) {
        char id[SY_STREAM_ID_MAX];
        rc = copy_id(id, rep);
        if (rc == SY_OK && id_out != NULL)
            memcpy(id_out, id, SY_STREAM_ID_MAX);
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    return rc;
}

static sy_err r_xgroup_create(sy_store *s, const char *stream, const char *group,
                              const char *start_id, bool *created)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    const char *argv[6] = {"XGROUP", "CREATE", k, group, start_id, "MKSTREAM"};
    size_t lens[6] = {6, 6, full_key(r, stream, k), 0, 0, 8};
    redisReply *rep = NULL;
    sy_err rc;

    fill_lens(6, argv, lens);
    if ((rc = run1(r, 0, 6, argv, lens, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_STATUS) {
        if (created != NULL)
            *created = true;
    } else if (rep->type == REDIS_REPLY_ERROR && has(rep, "BUSYGROUP")) {
        if (created != NULL)
            *created = false;
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    return rc;
}

/* Blocking reads may hold at most max_blocking connections, so the pool always has room for
 * the hot path. Waits for a turn up to <block_ms>; false when none came. */
static bool take_block_turn(rstore *r, long block_ms)
{
    struct timespec ts;
    bool ok = true;

    timespec_at(&ts, sy_store__mono_ms() + block_ms);
    pthread_mutex_lock(&r->mu);
    while (r->blocking >= r->max_blocking && ok)
        ok = pthread_cond_timedwait(&r->cv, &r->mu, &ts) != ETIMEDOUT;
    if (ok)
        r->blocking++;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void give_block_turn(rstore *r)
{
    pthread_mutex_lock(&r->mu);
    r->blocking--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static sy_err r_xreadgroup(sy_store *s, const char *stream, const char *group, const char *consumer,
                           const char *from, size_t count, long block_ms, sy_stream_entries *out)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX], cnt[24], blk[24];
    const char *argv[11] = {"XREADGROUP", "GROUP", group, consumer, "COUNT", cnt};
    size_t lens[11] = {0};
    int argc = 6;
    redisReply *rep = NULL;
    sy_stream_entries res = {NULL, 0};
    call c;
    sy_err rc;

    fmt_i64(cnt, sizeof(cnt), (int64_t)count);
    if (block_ms > 0) {
        fmt_i64(blk, sizeof(blk), block_ms);
        argv[argc++] = "BLOCK";
        argv[argc++] = blk;
    }
    argv[argc++] = "STREAMS";
    lens[argc] = full_key(r, stream, k);
    argv[argc++] = k;
    argv[argc++] = from;
    fill_lens(argc, argv, lens);
    if (block_ms > 0 && !take_block_turn(r, block_ms)) {
        sy_stream_entries_cleanup(out);
        return SY_OK; /* nothing delivered within block_ms */
    }
    if ((rc = call_begin(r, &c, block_ms > 0 ? block_ms + BLOCK_GRACE_MS : 0)) != SY_OK) {
        if (block_ms > 0)
            give_block_turn(r);
        return rc;
    }
    c.held_block = block_ms > 0;
    if ((rc = call_cmd(&c, argc, argv, lens)) == SY_OK)
        rc = call_reply(&c, &rep);
    call_end(&c);
    if (rc != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_NIL) {
        rc = SY_OK;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
               rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements == 2) {
        rc = entries_from(rep->element[0]->element[1], s->max_value_bytes * SY_STREAM_FIELDS_MAX,
                          &res);
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    if (rc == SY_OK) {
        sy_stream_entries_cleanup(out);
        *out = res;
    } else {
        sy_stream_entries_cleanup(&res);
    }
    return rc;
}

static sy_err r_xack(sy_store *s, const char *stream, const char *group, const char *const *ids,
                     size_t n, bool del, size_t *acked)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    size_t klen = full_key(r, stream, k);
    const char **argv = sy_store__calloc(n + 3, sizeof(*argv));
    size_t *lens = sy_store__calloc(n + 3, sizeof(*lens));
    redisReply *rep = NULL;
    call c;
    sy_err rc = SY_ENOMEM;
    int64_t count = 0;

    if (argv == NULL || lens == NULL)
        goto out;
    argv[0] = "XACK";
    argv[1] = k;
    lens[1] = klen;
    argv[2] = group;
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = ids[i];
    fill_lens((int)n + 3, argv, lens);
    if ((rc = call_begin(r, &c, 0)) != SY_OK)
        goto out;
    (void)call_cmd(&c, (int)n + 3, argv, lens);
    if (del) {
        /* XDEL key id...: reuse the array from index 1 */
        argv[1] = "XDEL";
        lens[1] = 4;
        argv[2] = k;
        lens[2] = klen;
        (void)call_cmd(&c, (int)n + 2, argv + 1, lens + 1);
    }
    for (int i = 0; i < (del ? 2 : 1) && call_reply(&c, &rep) == SY_OK; i++) {
        if (rep->type == REDIS_REPLY_INTEGER) {
            if (i == 0)
                count = rep->integer;
        } else if (rc == SY_OK) {
            rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
        }
        freeReplyObject(rep);
        rep = NULL;
    }
    if (c.fail != SY_OK)
        rc = c.fail;
    call_end(&c);
    if (rc == SY_OK && acked != NULL)
        *acked = (size_t)count;
out:
    sy_store__free(argv);
    sy_store__free(lens);
    return rc;
}

static sy_err r_xautoclaim(sy_store *s, const char *stream, const char *group, const char *consumer,
                           int64_t min_idle_ms, const char *start, size_t count,
                           sy_stream_entries *out, char next[SY_STREAM_ID_MAX])
{
    rstore *r = R(s);
    char k[FULLKEY_MAX], idle[24], cnt[24], nx[SY_STREAM_ID_MAX];
    const char *argv[8] = {"XAUTOCLAIM", k, group, consumer, idle, start, "COUNT", cnt};
    size_t lens[8] = {0, full_key(r, stream, k)};
    redisReply *rep = NULL;
    sy_stream_entries res = {NULL, 0};
    sy_err rc;

    fmt_i64(idle, sizeof(idle), min_idle_ms);
    fmt_i64(cnt, sizeof(cnt), (int64_t)count);
    fill_lens(8, argv, lens);
    if ((rc = run1(r, 0, 8, argv, lens, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) {
        rc = copy_id(nx, rep->element[0]);
        if (rc == SY_OK)
            rc = entries_from(rep->element[1], s->max_value_bytes * SY_STREAM_FIELDS_MAX, &res);
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    if (rc == SY_OK) {
        sy_stream_entries_cleanup(out);
        *out = res;
        memcpy(next, nx, SY_STREAM_ID_MAX);
    } else {
        sy_stream_entries_cleanup(&res);
    }
    return rc;
}

static sy_err r_xlen(sy_store *s, const char *stream, int64_t *len)
{
    return key_int(R(s), "XLEN", stream, NULL, len);
}

static sy_err r_xpending(sy_store *s, const char *stream, const char *group, sy_stream_pending *out)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX];
    const char *argv[3] = {"XPENDING", k, group};
    size_t lens[3] = {8, full_key(r, stream, k), strlen(group)};
    redisReply *rep = NULL;
    sy_stream_pending p;
    sy_err rc = run1(r, 0, 3, argv, lens, &rep);

    if (rc != SY_OK)
        return rc;
    memset(&p, 0, sizeof(p));
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER) {
        p.count = rep->element[0]->integer;
        if (p.count > 0) {
            rc = copy_id(p.min_id, rep->element[1]);
            if (rc == SY_OK)
                rc = copy_id(p.max_id, rep->element[2]);
            if (rep->element[3]->type == REDIS_REPLY_ARRAY)
                p.consumers = rep->element[3]->elements;
        }
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    if (rc == SY_OK)
        *out = p;
    return rc;
}

static sy_err r_xpending_list(sy_store *s, const char *stream, const char *group, const char *start,
                              const char *consumer, size_t count, sy_stream_pel_item *items,
                              size_t *n)
{
    rstore *r = R(s);
    char k[FULLKEY_MAX], cnt[24];
    const char *argv[7] = {"XPENDING", k, group, start, "+", cnt, consumer};
    size_t lens[7] = {0, full_key(r, stream, k)};
    int argc = consumer ? 7 : 6;
    redisReply *rep = NULL;
    size_t got = 0;
    sy_err rc;

    fmt_i64(cnt, sizeof(cnt), (int64_t)count);
    fill_lens(argc, argv, lens);
    if ((rc = run1(r, 0, argc, argv, lens, &rep)) != SY_OK)
        return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements <= count) {
        for (size_t i = 0; i < rep->elements && rc == SY_OK; i++) {
            const redisReply *e = rep->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
                e->element[1]->type != REDIS_REPLY_STRING ||
                e->element[1]->len > SY_STORE_NAME_MAX ||
                e->element[2]->type != REDIS_REPLY_INTEGER ||
                e->element[3]->type != REDIS_REPLY_INTEGER) {
                rc = SY_EINTERNAL;
                break;
            }
            if ((rc = copy_id(items[got].id, e->element[0])) != SY_OK)
                break;
            memcpy(items[got].consumer, e->element[1]->str, e->element[1]->len);
            items[got].consumer[e->element[1]->len] = '\0';
            items[got].idle_ms = e->element[2]->integer;
            items[got].deliveries = e->element[3]->integer;
            got++;
        }
    } else {
        rc = rep->type == REDIS_REPLY_ERROR ? map_error(rep) : SY_EINTERNAL;
    }
    freeReplyObject(rep);
    if (rc == SY_OK)
        *n = got;
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static bool r_healthy(const sy_store *s)
{
    return atomic_load(&((const rstore *)(const void *)s)->healthy);
}

static void r_stats(sy_store *s, sy_store_stats *out)
{
    rstore *r = R(s);

    pthread_mutex_lock(&r->mu);
    out->pool = r->pool;
    out->connected = r->connected;
    out->reconnects = r->reconnects;
    pthread_mutex_unlock(&r->mu);
}

static void r_destroy(sy_store *s)
{
    rstore *r = R(s);

    if (r->monitor_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_signal(&r->mcv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->monitor, NULL);
        pthread_cond_destroy(&r->cv);
        pthread_cond_destroy(&r->mcv);
        pthread_mutex_destroy(&r->mu);
    }
    for (int i = 0; r->conns != NULL && i < r->pool; i++)
        if (r->conns[i].c != NULL)
            redisFree(r->conns[i].c);
    sy_store__free(r->conns);
    if (r->password != NULL) {
        explicit_bzero(r->password, strlen(r->password));
        sy_store__free(r->password);
    }
    sy_store__free(r->url);
    sy_store__free(r->host);
    sy_store__free(r->unix_path);
    sy_store__free(r->user);
    sy_store__free(r->prefix);
    sy_store__free(r);
}

static const sy_store_vt redis_vt = {
    .destroy = r_destroy,
    .healthy = r_healthy,
    .stats = r_stats,
    .get = r_get,
    .set = r_set,
    .del = r_del,
    .exists = r_exists,
    .expire = r_expire,
    .ttl = r_ttl,
    .hincrby_many = r_hincrby_many,
    .hgetall = r_hgetall,
    .hset = r_hset,
    .hdel = r_hdel,
    .gcra = r_gcra,
    .cas = r_cas,
    .xadd = r_xadd,
    .xgroup_create = r_xgroup_create,
    .xreadgroup = r_xreadgroup,
    .xack = r_xack,
    .xautoclaim = r_xautoclaim,
    .xlen = r_xlen,
    .xpending = r_xpending,
    .xpending_list = r_xpending_list,
};

static bool sha1_hex(const char *src, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(src, strlen(src), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return false;
    for (unsigned i = 0; i < n; i++)
        (void)snprintf(out + (size_t)2 * i, 3, "%02x", md[i]);
    return true;
}

static bool dup_opt(char **dst, const char *src)
{
    if (src == NULL)
        return true;
    *dst = sy_store__strdup(src);
    return *dst != NULL;
}

sy_err sy_store_redis_new(const sy_store_opts *opts, sy_store **out)
{
    const sy_store_redis_opts *o = &opts->redis;
    rstore *r = sy_store__calloc(1, sizeof(*r));
    pthread_condattr_t ca;
    sy_err rc = SY_ENOMEM;

    if (r == NULL)
        return SY_ENOMEM;
    sy_store__init_head(&r->base, &redis_vt, SY_STORE_REDIS, o->max_value_bytes);
    atomic_init(&r->healthy, false);
    r->port = o->port;
    r->db = o->db;
    r->pool = o->pool > 0 ? o->pool : 1;
    r->max_blocking = r->pool / 2 > 0 ? r->pool / 2 : 1;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 50;
    r->seed = (unsigned)sy_store__mono_ms() ^ (unsigned)(uintptr_t)r;
    r->scripts[SC_GCRA].src = GCRA_LUA;
    r->scripts[SC_CAS].src = CAS_LUA;
    r->scripts[SC_ONCE].src = ONCE_LUA;
    if (!dup_opt(&r->url, o->url ? o->url : "redis") || !dup_opt(&r->host, o->host) ||
        !dup_opt(&r->unix_path, o->unix_path) || !dup_opt(&r->user, o->user) ||
        !dup_opt(&r->password, o->password) ||
        !dup_opt(&r->prefix, o->key_prefix ? o->key_prefix : ""))
        goto fail;
    r->prefix_len = strlen(r->prefix);
    if (r->host == NULL && r->unix_path == NULL) {
        rc = SY_EINVAL;
        goto fail;
    }
    for (int i = 0; i < SC__N; i++)
        if (!sha1_hex(r->scripts[i].src, r->scripts[i].sha)) {
            rc = SY_EINTERNAL;
            goto fail;
        }
    r->conns = sy_store__calloc((size_t)r->pool, sizeof(*r->conns));
    if (r->conns == NULL)
        goto fail;

    rc = SY_EINTERNAL;
    if (pthread_mutex_init(&r->mu, NULL) != 0)
        goto fail;
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&r->cv, &ca) != 0) {
        pthread_mutex_destroy(&r->mu);
        goto fail;
    }
    if (pthread_cond_init(&r->mcv, &ca) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        goto fail;
    }
    pthread_condattr_destroy(&ca);

    /* Fill the pool now so the store is usable on return; stop at the first failure (the
     * monitor retries), so an unreachable Redis costs start-up one timeout_ms. */
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->pool; i++) {
        char why[160];
        redisContext *ctx = connect_one(r, why, sizeof(why));
        if (ctx == NULL) {
            state_down(r, why);
            break;
        }
        r->conns[i].c = ctx;
        r->conns[i].epoch = r->epoch;
        r->connected++;
        r->ever_up = true;
    }
    if (r->connected > 0)
        state_up(r);
    pthread_mutex_unlock(&r->mu);

    if (pthread_create(&r->monitor, NULL, monitor_main, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_cond_destroy(&r->mcv);
        pthread_mutex_destroy(&r->mu);
        goto fail;
    }
    r->monitor_started = true;
    *out = &r->base;
    return SY_OK;
fail:
    r->monitor_started = false;
    r_destroy(&r->base);
    return rc;
}
